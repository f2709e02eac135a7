namespace KvFetcher.Codecs.CacheGen;

/// <summary>
/// The quantization of <see cref="CacheGenPaperCodec"/> (CacheGen paper, section 5: "layer-wise quantization"): anchor
/// tokens at 8 bits (largest magnitude 127) at every level; deltas with more bins in early layers than in later ones,
/// the layers split into three groups by depth (first, middle and last third), each level a set of three largest
/// magnitudes. Level 0 is the finest; seven levels, each about 0.4 bits per value below the one before.
/// </summary>
internal static class CacheGenPaperBins
{
    /// <summary>Largest quantized magnitude of an anchor token (8-bit symmetric: 255 symbols).</summary>
    public const int AnchorMagnitude = 127;

    /// <summary>Tokens per group: an anchor then its deltas (the paper's groups of 10 contiguous tokens).</summary>
    public const int GroupTokens = 10;

    /// <summary>The most symbols any stream has (anchors: 2 * 127 + 1); symbols fit a byte.</summary>
    public const int MaxSymbols = (2 * AnchorMagnitude) + 1;

    /// <summary>Per level, the deltas' largest magnitude in the first, middle and last third of the layers.</summary>
    private static readonly int[][] s_deltaMagnitudes =
    [
        [127, 95, 63],
        [95, 71, 47],
        [63, 47, 31],
        [47, 35, 23],
        [31, 23, 15],
        [15, 11, 7],
        [7, 5, 3],
    ];

    /// <summary>The quality levels, best first.</summary>
    public static int LevelCount => s_deltaMagnitudes.Length;

    /// <summary>Every alphabet size a stream of any level can have (anchors' and every delta group's).</summary>
    public static IEnumerable<int> AlphabetSizes =>
        s_deltaMagnitudes.SelectMany(m => m).Append(AnchorMagnitude).Distinct().Order().Select(Symbols);

    /// <summary>Which third of the depth <paramref name="layer"/> lies in: 0, 1 or 2.</summary>
    public static int LayerGroup(int layers, int layer) => (int)((long)layer * 3 / layers);

    /// <summary>The deltas' largest quantized magnitude in <paramref name="layer"/> of <paramref name="layers"/> at <paramref name="level"/>.</summary>
    public static int DeltaMagnitude(int level, int layers, int layer) => s_deltaMagnitudes[level][LayerGroup(layers, layer)];

    /// <summary>Distinct symbols of magnitudes up to <paramref name="magnitude"/>: the integers in [-magnitude, magnitude].</summary>
    public static int Symbols(int magnitude) => (2 * magnitude) + 1;
}
