using KvFetcher.Codecs.Entropy;
using KvFetcher.Core;

namespace KvFetcher.Codecs.Tests.Entropy;

public class StaticRansTests
{
    public static TheoryData<string, int> Streams => new()
    {
        { "skewed", 50_000 },
        { "uniform", 50_000 },
        { "single", 1 },
        { "single", 1000 },
        { "two", 2 },
        { "two", 3 },
        { "skewed", 7 },
        { "rare", 40_000 },
    };

    [Theory]
    [MemberData(nameof(Streams))]
    public void Decode_EncodedStream_RoundTrips(string kind, int length)
    {
        byte[] symbols = Make(kind, length, seed: length);
        byte[] coded = Encode(symbols, out int written);
        Assert.True(written > 0, "the block should fit in twice its input plus 1 KiB");
        var decoded = new byte[length];
        int consumed = StaticRans.Decode(coded.AsSpan(0, written), decoded, 0);
        Assert.Equal(written, consumed);
        Assert.Equal(symbols, decoded);
    }

    [Fact]
    public void TryEncode_SkewedStream_NearEntropy()
    {
        byte[] symbols = Make("skewed", 100_000, seed: 3);
        Span<int> histogram = stackalloc int[256];
        StaticRans.Count(symbols, histogram);
        double entropyBytes = StaticRans.EntropyBits(histogram) / 8;
        Encode(symbols, out int written);
        Assert.InRange(written, entropyBytes, (entropyBytes * 1.01) + 600);
    }

    [Fact]
    public void TryEncode_DestinationTooSmall_ReturnsMinusOne()
    {
        byte[] symbols = Make("uniform", 10_000, seed: 4);
        Span<int> histogram = stackalloc int[256];
        StaticRans.Count(symbols, histogram);
        Assert.Equal(-1, StaticRans.TryEncode(symbols, histogram, new byte[9_000]));
    }

    [Theory]
    [InlineData(12)]
    [InlineData(15)]
    public void Normalize_ManyRareSymbols_SumsToScaleAndKeepsEveryPresentSymbol(int scaleBits)
    {
        var histogram = new int[256];
        histogram[0] = 1_000_000;
        for (int s = 1; s < 256; s++)
        {
            histogram[s] = 1;
        }

        var freq = new int[256];
        StaticRans.Normalize(histogram, 1_000_255, scaleBits, freq);
        Assert.Equal(1 << scaleBits, freq.Sum());
        Assert.All(freq, f => Assert.True(f >= 1));
    }

    [Fact]
    public void DivisionMultiplier_EveryFrequency_MatchesDivision()
    {
        var random = new Random(9);
        const uint MaxState = (1u << 31) - 1;
        for (uint f = 1; f <= 1u << StaticRans.MaxScaleBits; f++)
        {
            ulong m = StaticRans.DivisionMultiplier(f, out int shift);
            uint top = MaxState - (MaxState % f);
            foreach (uint x in new[] { 0u, f - 1, f, MaxState, top, top - 1, (uint)random.Next() })
            {
                Assert.Equal(x / f, (uint)((x * m) >> shift));
            }
        }
    }

    [Fact]
    public void Decode_EveryTruncation_ThrowsInvalidKvData()
    {
        byte[] symbols = Make("skewed", 300, seed: 5);
        byte[] coded = Encode(symbols, out int written);
        var decoded = new byte[symbols.Length];
        for (int length = 0; length < written; length++)
        {
            Assert.Throws<InvalidKvDataException>(() => StaticRans.Decode(coded.AsSpan(0, length), decoded, 0));
        }
    }

    [Fact]
    public void Decode_RandomMutations_ThrowOnlyInvalidKvData()
    {
        byte[] symbols = Make("skewed", 2000, seed: 6);
        byte[] coded = Encode(symbols, out int written);
        var random = new Random(7);
        var decoded = new byte[symbols.Length];
        int detected = 0;
        for (int trial = 0; trial < 3000; trial++)
        {
            byte[] mutated = coded.AsSpan(0, written).ToArray();
            int at = random.Next(written);
            if ((trial & 1) == 0)
            {
                mutated[at] ^= (byte)(1 << random.Next(8));
            }
            else
            {
                mutated[at] = (byte)random.Next(256);
            }

            try
            {
                StaticRans.Decode(mutated, decoded, 0);
            }
            catch (InvalidKvDataException)
            {
                detected++;
            }
        }

        Assert.True(detected > 2000, $"only {detected} of 3000 mutations were detected");
    }

    [Fact]
    public void Decode_BadScaleBits_NamesField()
    {
        byte[] symbols = Make("skewed", 100, seed: 8);
        byte[] coded = Encode(symbols, out int written);
        coded[0] = 20;
        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() => StaticRans.Decode(coded.AsSpan(0, written), new byte[100], 40));
        Assert.Contains("scale bits out of range at payload offset 40", ex.Message, StringComparison.Ordinal);
    }

    private static byte[] Encode(byte[] symbols, out int written)
    {
        var histogram = new int[256];
        StaticRans.Count(symbols, histogram);
        var coded = new byte[(symbols.Length * 2) + 1024];
        written = StaticRans.TryEncode(symbols, histogram, coded);
        return coded;
    }

    private static byte[] Make(string kind, int length, int seed)
    {
        var random = new Random(seed);
        var symbols = new byte[length];
        for (int i = 0; i < length; i++)
        {
            symbols[i] = kind switch
            {
                "uniform" => (byte)random.Next(256),
                "single" => 42,
                "two" => (byte)(i % 2 == 0 ? 3 : 250),
                "rare" => random.Next(1000) == 0 ? (byte)random.Next(256) : (byte)7,
                _ => (byte)Math.Min(255, (int)(-Math.Log(1 - random.NextDouble()) * 6)),
            };
        }

        return symbols;
    }
}
