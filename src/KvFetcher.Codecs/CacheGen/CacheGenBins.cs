namespace KvFetcher.Codecs.CacheGen;

/// <summary>
/// CacheGen's quantization bins per layer, as LMCache chooses them (<c>CacheGenConfig.from_model_name</c>, the
/// fallback for models it has no table for): a model with fewer than 10 layers quantizes every layer with the first
/// bin count; otherwise K layers [0, 10) and V layers [0, 2) use the first bin count and the rest the second. The
/// split is in absolute layers, not a fraction of the depth. LMCache's default set is 32 then 16 bins; the quality
/// ladder halves both per level.
/// </summary>
internal static class CacheGenBins
{
    /// <summary>K layers below this use the first bin count (LMCache: 10).</summary>
    public const int KeyFirstLayers = 10;

    /// <summary>V layers below this use the first bin count (LMCache: 2).</summary>
    public const int ValueFirstLayers = 2;

    /// <summary>Models with fewer layers than this use the first bin count everywhere (LMCache: 10).</summary>
    public const int SmallModelLayers = 10;

    /// <summary>The largest bin count of any level: symbols stay below 31 and fit a byte.</summary>
    public const int MaxBins = 32;

    private static readonly int[] s_firstBins = [32, 16, 8];
    private static readonly int[] s_secondBins = [16, 8, 4];

    /// <summary>The quality levels, best first.</summary>
    public static int LevelCount => s_firstBins.Length;

    /// <summary>The bin count of one layer's K (<paramref name="kind"/> 0) or V (1) at <paramref name="level"/>.</summary>
    public static int Of(int level, int layers, int layer, int kind)
    {
        int firstLayers = layers < SmallModelLayers ? layers : kind == 0 ? KeyFirstLayers : ValueFirstLayers;
        return layer < firstLayers ? s_firstBins[level] : s_secondBins[level];
    }

    /// <summary>LMCache's largest quantized magnitude for <paramref name="bins"/> bins: <c>bins / 2 - 1</c>.</summary>
    public static int MaxMagnitude(int bins) => (bins / 2) - 1;

    /// <summary>Distinct symbols for <paramref name="bins"/> bins: the integers in [-max, max], i.e. <c>bins - 1</c>.</summary>
    public static int Symbols(int bins) => (2 * MaxMagnitude(bins)) + 1;
}
