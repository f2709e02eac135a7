using KvFetcher.Codecs.CacheGen;
using KvFetcher.Core.Containers;
using KvFetcher.Core;
using KvFetcher.Engine;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Restoring;

namespace KvFetcher.Cuda.Reuse;

/// <summary>
/// Decodes <c>cachegen</c> chunks on the GPU's CUDA cores: the tables, scales and stream lengths are checked on the
/// host (so the kernel never loops or reads out of bounds), then one thread per (layer, K/V) stream arithmetic-decodes
/// straight into the slot's device KV, and each stream's decoded length is checked against its declared one.
/// </summary>
internal sealed class CudaCacheGenDecoder : IRestoreSlot
{
    private readonly DeviceChunk _chunk;
    private readonly int[] _planeInfo;
    private readonly long[] _status;
    private DeviceBuffer? _payload;
    private DeviceBuffer? _parameters;
    private DeviceBuffer? _planeTable;
    private DeviceBuffer? _statusBuffer;

    public CudaCacheGenDecoder(DeviceChunk chunk)
    {
        _chunk = chunk;
        _planeInfo = new int[5 * chunk.Shape.Layers * 2];
        _status = new long[chunk.Shape.Layers * 2];
    }

    public void Decode(ReadOnlyMemory<byte> container, in ChunkExpectation expected, KvVariant variant)
    {
        ChunkHeader header = ChunkContainer.Read(container.Span, expected, out ReadOnlySpan<byte> parameters, out ReadOnlySpan<byte> payload);
        if (header.Codec != CodecId.CacheGen || header.Level != variant.Level)
        {
            throw new InvalidKvDataException($"KV chunk container: holds {header.Codec} level {header.Level}; cachegen level {variant.Level} was fetched.");
        }

        KvShape shape = _chunk.Shape;
        int planes = shape.Layers * 2;
        Span<int> info = _planeInfo;
        Span<int> tableOffsets = stackalloc int[planes];
        Span<int> streamOffsets = stackalloc int[planes];
        Span<int> streamLengths = stackalloc int[planes];
        Span<int> symbols = stackalloc int[planes];
        Span<int> magnitudes = stackalloc int[planes];
        CacheGenCodec.DescribePlanes(parameters, payload, shape, header.Level, tableOffsets, streamOffsets, streamLengths, symbols, magnitudes);
        for (int p = 0; p < planes; p++)
        {
            info[(5 * p) + 0] = tableOffsets[p];
            info[(5 * p) + 1] = streamOffsets[p];
            info[(5 * p) + 2] = streamLengths[p];
            info[(5 * p) + 3] = symbols[p];
            info[(5 * p) + 4] = magnitudes[p];
        }

        CudaContext context = _chunk.Context;
        if (_payload is null || _payload.Length < payload.Length)
        {
            _payload?.Dispose();
            _payload = null;
            _payload = context.Allocate(Math.Max(payload.Length, 1) + (1 << 16));
        }

        ReadOnlySpan<byte> scales = parameters[CacheGenCodec.ScalesOffset(shape.Layers)..];
        if (_parameters is null || _parameters.Length < scales.Length)
        {
            _parameters?.Dispose();
            _parameters = null;
            _parameters = context.Allocate(scales.Length);
        }

        _planeTable ??= context.Allocate((long)_planeInfo.Length * sizeof(int));
        _statusBuffer ??= context.Allocate((long)_status.Length * sizeof(long));
        _payload.CopyFrom(payload);
        _parameters.CopyFrom(scales);
        _planeTable.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(_planeInfo.AsSpan()));
        _chunk.Model.RestoreKernels.DecodeCacheGen(_chunk.Stream, _payload, _parameters, _planeTable, planes, shape.Tokens, shape.Channels, _chunk.Kv, _chunk.DType, _statusBuffer);
        _chunk.Stream.Synchronize();
        _statusBuffer.CopyTo(System.Runtime.InteropServices.MemoryMarshal.AsBytes(_status.AsSpan()));
        for (int p = 0; p < planes; p++)
        {
            if (_status[p] != streamLengths[p])
            {
                string why = _status[p] switch
                {
                    -1 => "does not start with byte 0",
                    -2 => "holds a code target outside the 16-bit CDF",
                    _ => $"declares {streamLengths[p]} bytes but its symbols take {_status[p]}",
                };
                throw new InvalidKvDataException($"cachegen: the stream of layer {p >> 1} {((p & 1) == 0 ? 'K' : 'V')} {why} (CUDA decoder).");
            }
        }
    }

    public void Restore(IKvCache cache, int start, int end) => _chunk.RestoreInto(cache, start, end);

    public void Dispose()
    {
        _payload?.Dispose();
        _parameters?.Dispose();
        _planeTable?.Dispose();
        _statusBuffer?.Dispose();
    }
}
