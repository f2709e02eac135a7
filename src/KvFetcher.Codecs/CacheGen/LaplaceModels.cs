namespace KvFetcher.Codecs.CacheGen;

/// <summary>
/// The probability models of <see cref="CacheGenPaperCodec"/>: for an alphabet of n = 2h + 1 symbols, a two-sided
/// geometric (discrete Laplace) distribution <c>P(z) ~ r^|z|</c> over the offsets z in [-h, h] from a centre symbol,
/// taken modulo n so that any centre covers the whole alphabet. <see cref="ParameterCount"/> shapes per alphabet, on a
/// geometric grid of <c>1 - r = 2^(-k/4)</c> (k = 0: all mass on the centre; k = 63: nearly uniform over 255 symbols).
/// A stream's model per (layer, K/V, channel) is then two bytes, its centre and k, instead of a table.
/// </summary>
/// <remarks>
/// The 16-bit CDFs are built once per process from IEEE double arithmetic only (square root, multiply, add, divide,
/// round to nearest even), so encoder and decoder build identical tables on any machine; a CDF is
/// <c>round(P(offset &lt; j) * (2^16 - n)) + j</c>, strictly increasing, every symbol at least 1 of 65536.
/// </remarks>
internal static class LaplaceModels
{
    /// <summary>Shapes per alphabet; a model's parameter byte is below this.</summary>
    public const int ParameterCount = 64;

    /// <summary>Bits of the decoder's first lookup: the CDF's total split into 2^8 slices.</summary>
    public const int BucketBits = 8;

    private const int CdfTotal = 1 << RangeEncoder.CdfBits;

    private static readonly int[] s_sizeIndex = BuildSizeIndex(out s_sizes);
    private static readonly int[] s_sizes;
    private static readonly int[] s_cdfOffsets = new int[s_sizes.Length * ParameterCount];
    private static readonly int[] s_cdfs = BuildCdfs();
    private static readonly byte[] s_buckets = BuildBuckets();
    private static readonly float[] s_bits = BuildBits();

    /// <summary>Every table, flat: a model's CDF is <c>n + 1</c> entries at <see cref="CdfOffset"/>.</summary>
    public static ReadOnlySpan<int> Cdfs => s_cdfs;

    /// <summary>Every bucket table, flat: <c>2^8</c> entries per model at <see cref="BucketOffset"/>, the symbol whose range holds each slice's start.</summary>
    public static ReadOnlySpan<byte> Buckets => s_buckets;

    /// <summary>Where the CDF of alphabet <paramref name="symbols"/> and parameter <paramref name="parameter"/> starts in <see cref="Cdfs"/>.</summary>
    public static int CdfOffset(int symbols, int parameter) => s_cdfOffsets[(s_sizeIndex[symbols] * ParameterCount) + parameter];

    /// <summary>Where the buckets of alphabet <paramref name="symbols"/> and parameter <paramref name="parameter"/> start in <see cref="Buckets"/>.</summary>
    public static int BucketOffset(int symbols, int parameter) => ((s_sizeIndex[symbols] * ParameterCount) + parameter) << BucketBits;

    /// <summary>The table index of symbol <paramref name="symbol"/> coded around <paramref name="center"/> (its offset plus h).</summary>
    public static int IndexOf(int symbol, int center, int symbols)
    {
        int half = symbols >> 1;
        int z = symbol - center;
        z = z > half ? z - symbols : z < -half ? z + symbols : z;
        return z + half;
    }

    /// <summary>The symbol of table index <paramref name="index"/> coded around <paramref name="center"/>.</summary>
    public static int SymbolOf(int index, int center, int symbols)
    {
        int symbol = index - (symbols >> 1) + center;
        return symbol < 0 ? symbol + symbols : symbol >= symbols ? symbol - symbols : symbol;
    }

    /// <summary>
    /// The model for symbols counted in <paramref name="histogram"/> (length n): the centre is their median, the shape
    /// first estimated from the mean offset (for this distribution <c>E|z| = 2r / (1 - r^2)</c>), then the cheapest of
    /// the grid points around it by the counts' coded size.
    /// </summary>
    public static (int Center, int Parameter) Fit(ReadOnlySpan<int> histogram)
    {
        int symbols = histogram.Length;
        long total = 0;
        foreach (int count in histogram)
        {
            total += count;
        }

        if (total == 0)
        {
            return (symbols >> 1, 0);
        }

        int center = 0;
        long seen = histogram[0];
        while (2 * seen < total)
        {
            seen += histogram[++center];
        }

        double offsets = 0;
        for (int s = 0; s < symbols; s++)
        {
            offsets += (double)histogram[s] * Math.Abs(IndexOf(s, center, symbols) - (symbols >> 1));
        }

        double mean = offsets / total;
        double r = mean > 0 ? (Math.Sqrt(1 + (mean * mean)) - 1) / mean : 0;
        int guess = r <= 0 ? 0 : (int)Math.Clamp(Math.Round(-4 * Math.Log2(1 - r)), 0, ParameterCount - 1);
        int best = guess;
        double bestBits = double.MaxValue;
        for (int parameter = Math.Max(0, guess - 2); parameter <= Math.Min(ParameterCount - 1, guess + 2); parameter++)
        {
            ReadOnlySpan<float> bits = s_bits.AsSpan(CdfOffset(symbols, parameter), symbols);
            double sum = 0;
            for (int s = 0; s < symbols; s++)
            {
                sum += histogram[s] * (double)bits[IndexOf(s, center, symbols)];
            }

            if (sum < bestBits)
            {
                bestBits = sum;
                best = parameter;
            }
        }

        return (center, best);
    }

    private static int[] BuildSizeIndex(out int[] sizes)
    {
        sizes = [.. CacheGenPaperBins.AlphabetSizes];
        var index = new int[CacheGenPaperBins.MaxSymbols + 1];
        index.AsSpan().Fill(-1);
        for (int i = 0; i < sizes.Length; i++)
        {
            index[sizes[i]] = i;
        }

        return index;
    }

    private static int[] BuildCdfs()
    {
        int length = 0;
        for (int i = 0; i < s_sizes.Length; i++)
        {
            for (int k = 0; k < ParameterCount; k++)
            {
                s_cdfOffsets[(i * ParameterCount) + k] = length;
                length += s_sizes[i] + 1;
            }
        }

        var cdfs = new int[length];
        var weights = new double[CacheGenPaperBins.MaxSymbols];
        double ratio = 1 / Math.Sqrt(Math.Sqrt(2.0));
        for (int i = 0; i < s_sizes.Length; i++)
        {
            int n = s_sizes[i];
            int half = n >> 1;
            double oneMinusR = 1;
            for (int k = 0; k < ParameterCount; k++)
            {
                double r = 1 - oneMinusR;
                oneMinusR *= ratio;
                weights[half] = 1;
                double power = 1;
                for (int z = 1; z <= half; z++)
                {
                    power *= r;
                    weights[half + z] = power;
                    weights[half - z] = power;
                }

                double sum = 0;
                for (int j = 0; j < n; j++)
                {
                    sum += weights[j];
                }

                Span<int> table = cdfs.AsSpan(s_cdfOffsets[(i * ParameterCount) + k], n + 1);
                double below = 0;
                for (int j = 0; j <= n; j++)
                {
                    table[j] = (int)Math.Round(below / sum * (CdfTotal - n)) + j;
                    if (j < n)
                    {
                        below += weights[j];
                    }
                }
            }
        }

        return cdfs;
    }

    private static byte[] BuildBuckets()
    {
        var buckets = new byte[s_sizes.Length * ParameterCount << BucketBits];
        for (int i = 0; i < s_sizes.Length; i++)
        {
            for (int k = 0; k < ParameterCount; k++)
            {
                ReadOnlySpan<int> table = s_cdfs.AsSpan(s_cdfOffsets[(i * ParameterCount) + k], s_sizes[i] + 1);
                Span<byte> slices = buckets.AsSpan(((i * ParameterCount) + k) << BucketBits, 1 << BucketBits);
                int symbol = 0;
                for (int b = 0; b < slices.Length; b++)
                {
                    int start = b << (RangeEncoder.CdfBits - BucketBits);
                    while (table[symbol + 1] <= start)
                    {
                        symbol++;
                    }

                    slices[b] = (byte)symbol;
                }
            }
        }

        return buckets;
    }

    private static float[] BuildBits()
    {
        var bits = new float[s_cdfs.Length];
        for (int i = 0; i < s_sizes.Length; i++)
        {
            for (int k = 0; k < ParameterCount; k++)
            {
                int offset = s_cdfOffsets[(i * ParameterCount) + k];
                for (int j = 0; j < s_sizes[i]; j++)
                {
                    bits[offset + j] = (float)Math.Log2((double)CdfTotal / (s_cdfs[offset + j + 1] - s_cdfs[offset + j]));
                }
            }
        }

        return bits;
    }
}
