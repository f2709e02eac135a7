using System.Globalization;
using KvFetcher.Codecs.Transform;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Cuda.Kvtc;
using KvFetcher.Engine;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Restoring;

namespace KvFetcher.Cuda.Reuse;

/// <summary>
/// Decodes <c>kvtc</c> chunks on the GPU: the chunk's layout (<see cref="KvtcChunkLayout"/>: tables, segment table,
/// escapes) is read and checked on the host, the transform's tables at the chunk's level are uploaded once per
/// transform and level (<see cref="CudaKvtcKernels.Tables"/>), then <see cref="CudaKvtcDecoder"/> decodes every segment
/// in parallel, inverts the transform on the tensor cores and writes the slot's device KV; each segment's kernel status
/// is checked afterwards, and a corrupt segment throws <see cref="InvalidKvDataException"/>.
/// </summary>
internal sealed class CudaKvtcChunkDecoder : IRestoreSlot
{
    private readonly DeviceChunk _chunk;
    private readonly KvtcChunkLayout _layout = new();
    private readonly byte[] _decodeTables = new byte[CudaKvtcDecoder.DecodeTablesBytes];
    private int[] _status = new int[64];
    private CudaKvtcDecoder? _decoder;

    public CudaKvtcChunkDecoder(DeviceChunk chunk)
    {
        _chunk = chunk;
    }

    public void Decode(ReadOnlyMemory<byte> container, in ChunkExpectation expected, KvVariant variant)
    {
        ChunkHeader header = ChunkContainer.Read(container.Span, expected, out ReadOnlySpan<byte> parameters, out ReadOnlySpan<byte> payload);
        if (header.Codec != CodecId.Kvtc || header.Level != variant.Level)
        {
            throw new InvalidKvDataException($"KV chunk container: holds {header.Codec} level {header.Level}; kvtc level {variant.Level} was fetched.");
        }

        Decode(parameters, payload, header.TokenStart, header.Level);
    }

    /// <summary>Decodes a kvtc chunk's parameters and payload (coded at <paramref name="tokenStart"/>) into the slot's device KV.</summary>
    internal void Decode(ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, long tokenStart, int level)
    {
        KvShape shape = _chunk.Shape;
        _layout.Read(parameters, payload, shape, _chunk.DType, level);
        KvtcTransform transform = _layout.Transform;
        CudaKvtcKernels kernels = _chunk.Model.KvtcKernels;
        string key = string.Create(CultureInfo.InvariantCulture, $"{transform.IdText}/{level}");
        CudaKvtcTables tables = kernels.Tables(key, () => new CudaKvtcTables(_chunk.Context, KvtcDeviceTables.Source(transform, level)));
        if (_status.Length < _layout.SegmentCount)
        {
            _status = new int[Math.Max(_layout.SegmentCount, _status.Length * 2)];
        }

        _layout.CopyDecodeTables(_decodeTables.AsSpan(0, CudaKvtcDecoder.SlotTableBytes), System.Runtime.InteropServices.MemoryMarshal.Cast<byte, uint>(_decodeTables.AsSpan(CudaKvtcDecoder.SlotTableBytes)));
        _decoder ??= new CudaKvtcDecoder(kernels, _chunk.Stream);
        _decoder.Decode(tables, payload, _decodeTables, _layout.Segments, _layout.SegmentCount, _layout.EscapeOffset, shape.Tokens, _layout.ExactHead, _layout.ExactTail,
            tokenStart, _chunk.Kv, _chunk.DType, _status);
        ReadOnlySpan<int> segments = _layout.Segments;
        for (int i = 0; i < _layout.SegmentCount; i++)
        {
            if (_status[i] != 0)
            {
                int at = i * KvtcChunkLayout.SegmentFields;
                string why = _status[i] switch
                {
                    1 => "starts with a rANS state out of range",
                    2 => "ends before its symbols are decoded",
                    3 => "holds more escapes than it declares",
                    4 => "holds symbols past the chunk's last block",
                    5 => "leaves bytes unread, ends in other states than it started or holds fewer escapes than it declares",
                    _ => $"returned status {_status[i]}",
                };
                throw new InvalidKvDataException($"kvtc: the segment at payload offset {segments[at + KvtcChunkLayout.StreamOffsetField]} (bit width {segments[at + KvtcChunkLayout.BitsField]}, {segments[at + KvtcChunkLayout.StreamBytesField]} bytes) {why} (CUDA decoder).");
            }
        }
    }

    public void Restore(IKvCache cache, int start, int end) => _chunk.RestoreInto(cache, start, end);

    public void Dispose() => _decoder?.Dispose();
}
