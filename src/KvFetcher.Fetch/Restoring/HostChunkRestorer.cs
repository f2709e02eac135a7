using System.Buffers;
using KvFetcher.Codecs;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Engine;

namespace KvFetcher.Fetch.Restoring;

/// <summary>Decodes every codec on the CPU into a pooled host buffer and imports it into any engine's cache.</summary>
public sealed class HostChunkRestorer : IChunkRestorer
{
    public static HostChunkRestorer Instance { get; } = new();

    public string Name => "cpu";

    public IRestoreSlot CreateSlot(KvShape shape, DType dtype) => new Slot(checked((int)(shape.Elements * dtype.SizeOf())), dtype);

    /// <summary>A host buffer of one chunk's KV in the wire layout.</summary>
    public sealed class Slot : IRestoreSlot
    {
        private readonly int _bytes;
        private readonly DType _dtype;
        private byte[] _kv;

        public Slot(int bytes, DType dtype)
        {
            _bytes = bytes;
            _dtype = dtype;
            _kv = ArrayPool<byte>.Shared.Rent(bytes);
        }

        public void Decode(ReadOnlyMemory<byte> container, in ChunkExpectation expected, KvVariant variant) =>
            variant.GetCodec().DecodeContainer(container.Span, expected, _kv.AsSpan(0, _bytes));

        public void Restore(IKvCache cache, int start, int end) => cache.Import(start, end, _dtype, _kv.AsSpan(0, _bytes));

        public void Dispose()
        {
            ArrayPool<byte>.Shared.Return(_kv);
            _kv = [];
        }
    }
}
