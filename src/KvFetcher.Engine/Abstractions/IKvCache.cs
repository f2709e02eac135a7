using KvFetcher.Core;

namespace KvFetcher.Engine;

/// <summary>
/// The keys and values of one sequence, wherever they live (host memory for <see cref="KvCache"/>, device memory for
/// the CUDA engine's cache). Positions [0, <see cref="Capacity"/>) may be filled in any order, by computing or by
/// importing them; <see cref="Length"/> is the longest filled prefix. Import and export use one wire layout,
/// <c>[layer][kind: 0 = K, 1 = V][token][kvHead][headDim]</c> in little-endian elements of the chosen dtype, and an
/// export in <see cref="StorageDType"/> followed by an import is exact. Import and export may run on another thread
/// than the session's forward steps, for positions the engine does not touch meanwhile.
/// </summary>
public interface IKvCache
{
    int NumLayers { get; }

    int NumKvHeads { get; }

    int HeadDim { get; }

    /// <summary>The most token positions the cache can hold.</summary>
    int Capacity { get; }

    /// <summary>The element type values are rounded to, and exported/imported in without loss.</summary>
    DType StorageDType { get; }

    /// <summary>The number of positions [0, n) that are all filled.</summary>
    int Length { get; }

    /// <summary>Whether <paramref name="position"/> holds a computed or imported value.</summary>
    bool IsFilled(int position);

    /// <summary>Bytes of an export of <paramref name="tokens"/> positions in <paramref name="dtype"/>.</summary>
    long GetExportByteCount(int tokens, DType dtype);

    /// <summary>Forgets every position at or after <paramref name="length"/> (0 empties the cache).</summary>
    void Truncate(int length);

    /// <summary>Writes positions [<paramref name="start"/>, <paramref name="end"/>) in the wire layout as <paramref name="dtype"/>; all must be filled.</summary>
    void Export(int start, int end, DType dtype, Span<byte> destination);

    /// <summary>Fills positions [<paramref name="start"/>, <paramref name="end"/>) from the wire layout in <paramref name="dtype"/>.</summary>
    void Import(int start, int end, DType dtype, ReadOnlySpan<byte> source);

    /// <summary>Whether <see cref="ImportLayers"/> and a session's <see cref="IInferenceSession.PrefillLowerLayers"/> work on this engine.</summary>
    bool SupportsLayerRanges => false;

    /// <summary>
    /// Writes the upper layers [<paramref name="layerStart"/>, <see cref="NumLayers"/>) of positions
    /// [<paramref name="start"/>, <paramref name="end"/>) from the wire layout cut to those layers. The positions count as
    /// filled once their lower layers are computed too (<see cref="IInferenceSession.PrefillLowerLayers"/>), in either order.
    /// </summary>
    void ImportLayers(int start, int end, int layerStart, DType dtype, ReadOnlySpan<byte> source) =>
        throw new NotSupportedException("This engine's KV cache does not import layer ranges.");
}
