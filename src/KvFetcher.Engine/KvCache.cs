using KvFetcher.Core;
using KvFetcher.Core.Numerics;

namespace KvFetcher.Engine;

/// <summary>
/// The attention keys and values of one sequence, for every layer and token position in [0, <see cref="Capacity"/>).
/// Positions may be filled in any order, by computing them (prefill) or by importing them (a fetched chunk);
/// <see cref="Length"/> is the longest prefix [0, n) that is filled, which is what a prefill may continue from.
/// </summary>
/// <remarks>
/// <para>
/// Values are held as fp32 for the kernels but are always rounded to <see cref="StorageDType"/> when written, so an
/// export in the storage dtype followed by an import is exact: a restored cache is bit-identical to a computed one.
/// Keys are stored after the rotary embedding, as Hugging Face transformers caches them.
/// </para>
/// <para>
/// Export/import layout (the documented wire layout of a token range [start, end)), little-endian elements of the
/// chosen dtype, dimensions outermost first: <c>[layer][kind: 0 = K, 1 = V][token][kvHead][headDim]</c>.
/// Internally each layer holds K and V as <c>[kvHead][position][headDim]</c> so attention reads keys contiguously.
/// </para>
/// </remarks>
public sealed class KvCache : IKvCache
{
    private readonly float[][] _keys;
    private readonly float[][] _values;
    private readonly FilledPositions _filled;

    /// <summary>Creates an empty cache.</summary>
    public KvCache(int numLayers, int numKvHeads, int headDim, int capacity, DType storageDType = DType.Float32)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(numLayers, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(numKvHeads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(headDim, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        NumLayers = numLayers;
        NumKvHeads = numKvHeads;
        HeadDim = headDim;
        Capacity = capacity;
        StorageDType = storageDType;
        _keys = new float[numLayers][];
        _values = new float[numLayers][];
        long perLayer = (long)numKvHeads * capacity * headDim;
        for (int layer = 0; layer < numLayers; layer++)
        {
            _keys[layer] = new float[perLayer];
            _values[layer] = new float[perLayer];
        }

        _filled = new FilledPositions(capacity);
    }

    public int NumLayers { get; }

    public int NumKvHeads { get; }

    public int HeadDim { get; }

    /// <summary>The most token positions the cache can hold.</summary>
    public int Capacity { get; }

    /// <summary>The element type values are rounded to, and exported/imported in without loss.</summary>
    public DType StorageDType { get; }

    /// <summary>The number of positions [0, n) that are all filled.</summary>
    public int Length => _filled.Length;

    /// <summary>K or V channels per token per layer: kvHeads * headDim.</summary>
    public int ChannelsPerToken => NumKvHeads * HeadDim;

    /// <summary>Whether <paramref name="position"/> holds a computed or imported value.</summary>
    public bool IsFilled(int position) => _filled.IsFilled(position);

    /// <summary>Bytes of an export of <paramref name="tokens"/> positions in <paramref name="dtype"/>.</summary>
    public long GetExportByteCount(int tokens, DType dtype) =>
        (long)NumLayers * 2 * tokens * ChannelsPerToken * dtype.SizeOf();

    /// <summary>Forgets every position at or after <paramref name="length"/> (0 empties the cache).</summary>
    public void Truncate(int length) => _filled.Truncate(length);

    /// <summary>
    /// Writes the K/V of positions [<paramref name="start"/>, <paramref name="end"/>) to <paramref name="destination"/>
    /// in the documented layout, converting to <paramref name="dtype"/>. Every position must be filled.
    /// </summary>
    public void Export(int start, int end, DType dtype, Span<byte> destination)
    {
        _filled.CheckRange(start, end);
        int tokens = end - start;
        long needed = GetExportByteCount(tokens, dtype);
        if (destination.Length < needed)
        {
            throw new ArgumentException($"Destination holds {destination.Length} bytes; the export needs {needed}.", nameof(destination));
        }

        _filled.CheckFilled(start, end);

        int elementSize = dtype.SizeOf();
        int rowBytes = HeadDim * elementSize;
        int offset = 0;
        for (int layer = 0; layer < NumLayers; layer++)
        {
            for (int kind = 0; kind < 2; kind++)
            {
                float[] source = kind == 0 ? _keys[layer] : _values[layer];
                for (int position = start; position < end; position++)
                {
                    for (int head = 0; head < NumKvHeads; head++)
                    {
                        FloatConversions.FromSingle(dtype, source.AsSpan(RowOffset(head, position), HeadDim), destination.Slice(offset, rowBytes));
                        offset += rowBytes;
                    }
                }
            }
        }
    }

    /// <summary>
    /// Fills positions [<paramref name="start"/>, <paramref name="end"/>) from <paramref name="source"/> in the
    /// documented layout and element type <paramref name="dtype"/>. Positions may be imported in any order; values are
    /// rounded to <see cref="StorageDType"/>.
    /// </summary>
    public void Import(int start, int end, DType dtype, ReadOnlySpan<byte> source)
    {
        _filled.CheckRange(start, end);
        int tokens = end - start;
        long needed = GetExportByteCount(tokens, dtype);
        if (source.Length != needed)
        {
            throw new ArgumentException($"Source holds {source.Length} bytes; positions [{start}, {end}) in {dtype.ToShortName()} need exactly {needed}.", nameof(source));
        }

        int elementSize = dtype.SizeOf();
        int rowBytes = HeadDim * elementSize;
        int offset = 0;
        for (int layer = 0; layer < NumLayers; layer++)
        {
            for (int kind = 0; kind < 2; kind++)
            {
                float[] target = kind == 0 ? _keys[layer] : _values[layer];
                for (int position = start; position < end; position++)
                {
                    for (int head = 0; head < NumKvHeads; head++)
                    {
                        Span<float> row = target.AsSpan(RowOffset(head, position), HeadDim);
                        FloatConversions.ToSingle(dtype, source.Slice(offset, rowBytes), row);
                        FloatConversions.RoundTo(StorageDType, row);
                        offset += rowBytes;
                    }
                }
            }
        }

        MarkFilled(start, end);
    }

    /// <summary>Keys of one layer and KV head: [capacity, headDim].</summary>
    internal Span<float> Keys(int layer, int kvHead) => _keys[layer].AsSpan(kvHead * Capacity * HeadDim, Capacity * HeadDim);

    /// <summary>Values of one layer and KV head: [capacity, headDim].</summary>
    internal Span<float> Values(int layer, int kvHead) => _values[layer].AsSpan(kvHead * Capacity * HeadDim, Capacity * HeadDim);

    /// <summary>The whole K array of a layer, [kvHead][position][headDim].</summary>
    internal float[] LayerKeys(int layer) => _keys[layer];

    /// <summary>The whole V array of a layer, [kvHead][position][headDim].</summary>
    internal float[] LayerValues(int layer) => _values[layer];

    /// <summary>
    /// Stores the K and V rows of tokens at [start, start + n) for one layer from token-major arrays
    /// [n, kvHeads * headDim], rounding to the storage dtype. Does not mark positions filled.
    /// </summary>
    internal void Write(int layer, int start, int n, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
    {
        int channels = ChannelsPerToken;
        for (int i = 0; i < n; i++)
        {
            for (int head = 0; head < NumKvHeads; head++)
            {
                int offset = RowOffset(head, start + i);
                Span<float> keyRow = _keys[layer].AsSpan(offset, HeadDim);
                Span<float> valueRow = _values[layer].AsSpan(offset, HeadDim);
                keys.Slice((i * channels) + (head * HeadDim), HeadDim).CopyTo(keyRow);
                values.Slice((i * channels) + (head * HeadDim), HeadDim).CopyTo(valueRow);
                FloatConversions.RoundTo(StorageDType, keyRow);
                FloatConversions.RoundTo(StorageDType, valueRow);
            }
        }
    }

    /// <summary>
    /// Marks [start, end) filled and extends <see cref="Length"/> over any now-contiguous prefix. Thread-safe: a fetcher
    /// may import one range while the engine computes another (disjoint positions); the lock also publishes the
    /// range's values to the thread that next observes it filled.
    /// </summary>
    internal void MarkFilled(int start, int end) => _filled.MarkFilled(start, end);

    private int RowOffset(int kvHead, int position) => ((kvHead * Capacity) + position) * HeadDim;
}
