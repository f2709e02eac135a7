using KvFetcher.Core;

namespace KvFetcher.Engine;

/// <summary>
/// What every engine's KV cache shares, written once: its shape, which positions are filled, the wire layout's size,
/// and the argument checks of import and export (so a host cache and a device cache refuse the same calls with the
/// same words). An engine backend derives from it and moves the values: <see cref="KvCache"/> in host memory, the
/// CUDA engine's cache in device memory.
/// </summary>
public abstract class KvCacheBase : IKvCache
{
    /// <summary>Checks the shape and starts with no position filled.</summary>
    protected KvCacheBase(int numLayers, int numKvHeads, int headDim, int capacity, DType storageDType)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(numLayers, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(numKvHeads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(headDim, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        CheckDType(storageDType, nameof(storageDType));
        NumLayers = numLayers;
        NumKvHeads = numKvHeads;
        HeadDim = headDim;
        Capacity = capacity;
        StorageDType = storageDType;
        Filled = new FilledPositions(capacity);
    }

    public int NumLayers { get; }

    public int NumKvHeads { get; }

    public int HeadDim { get; }

    /// <summary>The most token positions the cache can hold.</summary>
    public int Capacity { get; }

    /// <summary>The element type values are rounded to, and exported/imported in without loss.</summary>
    public DType StorageDType { get; }

    /// <summary>The number of positions [0, n) that are all filled.</summary>
    public int Length => Filled.Length;

    /// <summary>K or V channels per token per layer: kvHeads * headDim.</summary>
    public int ChannelsPerToken => NumKvHeads * HeadDim;

    /// <summary>Which positions hold values; a derived cache marks a range filled once its values are written.</summary>
    protected FilledPositions Filled { get; }

    /// <summary>Whether <paramref name="position"/> holds a computed or imported value.</summary>
    public bool IsFilled(int position) => Filled.IsFilled(position);

    /// <summary>Bytes of an export of <paramref name="tokens"/> positions in <paramref name="dtype"/>.</summary>
    public long GetExportByteCount(int tokens, DType dtype) =>
        (long)NumLayers * 2 * tokens * ChannelsPerToken * dtype.SizeOf();

    /// <summary>Forgets every position at or after <paramref name="length"/> (0 empties the cache).</summary>
    public void Truncate(int length) => Filled.Truncate(length);

    /// <summary>
    /// Writes the K/V of positions [<paramref name="start"/>, <paramref name="end"/>) to <paramref name="destination"/>
    /// in the documented layout, converting to <paramref name="dtype"/>. Every position must be filled.
    /// </summary>
    public abstract void Export(int start, int end, DType dtype, Span<byte> destination);

    /// <summary>
    /// Fills positions [<paramref name="start"/>, <paramref name="end"/>) from <paramref name="source"/> in the
    /// documented layout and element type <paramref name="dtype"/>; values are rounded to <see cref="StorageDType"/>.
    /// </summary>
    public abstract void Import(int start, int end, DType dtype, ReadOnlySpan<byte> source);

    /// <summary>Whether <see cref="ImportLayers"/> (and the session's lower-layer prefill) work on this engine.</summary>
    public virtual bool SupportsLayerRanges => false;

    /// <summary>
    /// Writes the upper layers [<paramref name="layerStart"/>, <see cref="NumLayers"/>) of positions
    /// [<paramref name="start"/>, <paramref name="end"/>) from the wire layout cut to those layers; they count as filled
    /// once their lower layers are computed too.
    /// </summary>
    public virtual void ImportLayers(int start, int end, int layerStart, DType dtype, ReadOnlySpan<byte> source) =>
        throw new NotSupportedException("This engine's KV cache does not import layer ranges.");

    /// <summary>
    /// Throws unless [<paramref name="start"/>, <paramref name="end"/>) is a non-empty range of the cache,
    /// <paramref name="dtype"/> is one the wire layout takes, and the source holds exactly the range's bytes; returns them.
    /// With <paramref name="layerStart"/>, the source holds layers [layerStart, <see cref="NumLayers"/>) only.
    /// </summary>
    protected long CheckImport(int start, int end, DType dtype, long sourceLength, string parameterName, int layerStart = 0)
    {
        Filled.CheckRange(start, end);
        CheckDType(dtype, nameof(dtype));
        ArgumentOutOfRangeException.ThrowIfNegative(layerStart);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layerStart, NumLayers);
        long needed = GetExportByteCount(end - start, dtype) / NumLayers * (NumLayers - layerStart);
        if (sourceLength != needed)
        {
            throw new ArgumentException($"Source holds {sourceLength} bytes; positions [{start}, {end}) in {dtype.ToShortName()} need exactly {needed}.", parameterName);
        }

        return needed;
    }

    /// <summary>
    /// Throws unless [<paramref name="start"/>, <paramref name="end"/>) is a non-empty, filled range of the cache,
    /// <paramref name="dtype"/> is one the wire layout takes, and the destination holds the range's bytes; returns them.
    /// </summary>
    protected long CheckExport(int start, int end, DType dtype, long destinationLength, string parameterName)
    {
        Filled.CheckRange(start, end);
        CheckDType(dtype, nameof(dtype));
        long needed = GetExportByteCount(end - start, dtype);
        if (destinationLength < needed)
        {
            throw new ArgumentException($"Destination holds {destinationLength} bytes; the export needs {needed}.", parameterName);
        }

        Filled.CheckFilled(start, end);
        return needed;
    }

    private static void CheckDType(DType dtype, string parameterName)
    {
        if (dtype is not (DType.Float32 or DType.Float16 or DType.BFloat16))
        {
            throw new ArgumentOutOfRangeException(parameterName, dtype, "Unknown dtype.");
        }
    }
}
