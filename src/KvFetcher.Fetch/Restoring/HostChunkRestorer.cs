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

    public bool SupportsLayerRanges => true;

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

        public bool SupportsLayerRanges => true;

        public void DecodeLayers(ChunkLayerTable table, ReadOnlyMemory<byte> layerBytes, int layerStart, KvVariant variant)
        {
            ArgumentNullException.ThrowIfNull(table);
            variant.GetCodec().DecodeLayers(table, layerBytes.Span, layerStart, table.Header.Shape.Layers, _kv.AsSpan(0, UpperBytes(table.Header.Shape.Layers, layerStart)));
        }

        public void RestoreLayers(IKvCache cache, int start, int end, int layerStart) =>
            cache.ImportLayers(start, end, layerStart, _dtype, _kv.AsSpan(0, UpperBytes(cache.NumLayers, layerStart)));

        private int UpperBytes(int layers, int layerStart) => _bytes / layers * (layers - layerStart);

        public void Dispose()
        {
            ArrayPool<byte>.Shared.Return(_kv);
            _kv = [];
        }
    }
}
