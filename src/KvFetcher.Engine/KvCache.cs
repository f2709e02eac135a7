using KvFetcher.Core;
using KvFetcher.Core.Numerics;

namespace KvFetcher.Engine;

/// <summary>
/// The attention keys and values of one sequence, for every layer and token position in [0, <see cref="KvCacheBase.Capacity"/>).
/// Positions may be filled in any order, by computing them (prefill) or by importing them (a fetched chunk);
/// <see cref="KvCacheBase.Length"/> is the longest prefix [0, n) that is filled, which is what a prefill may continue from.
/// </summary>
/// <remarks>
/// <para>
/// Values are held as fp32 for the kernels but are always rounded to <see cref="KvCacheBase.StorageDType"/> when written, so an
/// export in the storage dtype followed by an import is exact: a restored cache is bit-identical to a computed one.
/// Keys are stored after the rotary embedding, as Hugging Face transformers caches them.
/// </para>
/// <para>
/// Export/import layout (the documented wire layout of a token range [start, end)), little-endian elements of the
/// chosen dtype, dimensions outermost first: <c>[layer][kind: 0 = K, 1 = V][token][kvHead][headDim]</c>.
/// Internally each layer holds K and V as <c>[kvHead][position][headDim]</c> so attention reads keys contiguously.
/// </para>
/// </remarks>
public sealed class KvCache : KvCacheBase
{
    private readonly float[][] _keys;
    private readonly float[][] _values;

    /// <summary>Creates an empty cache.</summary>
    public KvCache(int numLayers, int numKvHeads, int headDim, int capacity, DType storageDType = DType.Float32)
        : base(numLayers, numKvHeads, headDim, capacity, storageDType)
    {
        _keys = new float[numLayers][];
        _values = new float[numLayers][];
        long perLayer = (long)numKvHeads * capacity * headDim;
        for (int layer = 0; layer < numLayers; layer++)
        {
            _keys[layer] = new float[perLayer];
            _values[layer] = new float[perLayer];
        }
    }

    /// <summary>
    /// Writes the K/V of positions [<paramref name="start"/>, <paramref name="end"/>) to <paramref name="destination"/>
    /// in the documented layout, converting to <paramref name="dtype"/>. Every position must be filled.
    /// </summary>
    public override void Export(int start, int end, DType dtype, Span<byte> destination)
    {
        _ = CheckExport(start, end, dtype, destination.Length, nameof(destination));
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
    /// rounded to <see cref="KvCacheBase.StorageDType"/>.
    /// </summary>
    public override void Import(int start, int end, DType dtype, ReadOnlySpan<byte> source)
    {
        _ = CheckImport(start, end, dtype, source.Length, nameof(source));
        Write(start, end, 0, dtype, source);
        MarkFilled(start, end);
    }

    public override bool SupportsLayerRanges => true;

    /// <summary>
    /// Writes the upper layers [<paramref name="layerStart"/>, <see cref="KvCacheBase.NumLayers"/>) of positions
    /// [<paramref name="start"/>, <paramref name="end"/>) from <paramref name="source"/>, the documented layout cut to
    /// those layers; the positions are filled once their lower layers are computed too
    /// (<see cref="IInferenceSession.PrefillLowerLayers"/>), in either order and from either thread.
    /// </summary>
    public override void ImportLayers(int start, int end, int layerStart, DType dtype, ReadOnlySpan<byte> source)
    {
        _ = CheckImport(start, end, dtype, source.Length, nameof(source), layerStart);
        Write(start, end, layerStart, dtype, source);
        Filled.MarkLayers(start, end, layerStart, NumLayers, NumLayers);
    }

    /// <summary>Records that the lower <paramref name="layers"/> layers of [start, end) are computed.</summary>
    internal void MarkLowerLayers(int start, int end, int layers) => Filled.MarkLayers(start, end, 0, layers, NumLayers);

    /// <summary>Writes layers [layerStart, NumLayers) of [start, end) from the wire layout cut to those layers.</summary>
    private void Write(int start, int end, int layerStart, DType dtype, ReadOnlySpan<byte> source)
    {
        int elementSize = dtype.SizeOf();
        int rowBytes = HeadDim * elementSize;
        int offset = 0;
        for (int layer = layerStart; layer < NumLayers; layer++)
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
    /// Marks [start, end) filled and extends <see cref="KvCacheBase.Length"/> over any now-contiguous prefix. Thread-safe: a fetcher
    /// may import one range while the engine computes another (disjoint positions); the lock also publishes the
    /// range's values to the thread that next observes it filled.
    /// </summary>
    internal void MarkFilled(int start, int end) => Filled.MarkFilled(start, end);

    private int RowOffset(int kvHead, int position) => ((kvHead * Capacity) + position) * HeadDim;
}
