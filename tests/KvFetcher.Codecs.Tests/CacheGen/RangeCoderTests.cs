using KvFetcher.Codecs.CacheGen;

namespace KvFetcher.Codecs.Tests.CacheGen;

public class RangeCoderTests
{
    [Theory]
    [InlineData(1, 3)]
    [InlineData(2, 31)]
    [InlineData(3, 7)]
    public void Decode_RandomSymbolsUnderSkewedCdfs_GivesBackEverySymbol(int seed, int n)
    {
        var random = new Random(seed);
        const int Tables = 5;
        var cdfs = new int[Tables][];
        for (int k = 0; k < Tables; k++)
        {
            // Strictly rising cumulative frequencies; table 0 gives one symbol almost everything, so the rare
            // symbols cost close to 16 bits and the coder runs at its narrowest ranges.
            var frequencies = new int[n];
            for (int s = 0; s < n; s++)
            {
                frequencies[s] = k == 0 ? 1 : 1 + random.Next(1000);
            }

            if (k == 0)
            {
                frequencies[n / 2] = (1 << 16) - (n - 1);
            }
            else
            {
                int total = frequencies.Sum();
                frequencies = [.. frequencies.Select(f => Math.Max(1, f * ((1 << 16) - n) / total))];
                frequencies[0] += (1 << 16) - frequencies.Sum();
            }

            cdfs[k] = new int[n + 1];
            for (int s = 0; s < n; s++)
            {
                cdfs[k][s + 1] = cdfs[k][s] + frequencies[s];
            }

            Assert.Equal(1 << 16, cdfs[k][n]);
        }

        const int Count = 20_000;
        var symbols = new int[Count];
        for (int i = 0; i < Count; i++)
        {
            // Mostly uniform over the alphabet: under table 0 that is mostly the 1-in-65536 symbols.
            symbols[i] = random.Next(n);
        }

        var buffer = new byte[RangeEncoder.MaxEncodedLength(Count)];
        var encoder = new RangeEncoder(buffer);
        for (int i = 0; i < Count; i++)
        {
            int[] cdf = cdfs[i % Tables];
            encoder.Encode((uint)cdf[symbols[i]], (uint)(cdf[symbols[i] + 1] - cdf[symbols[i]]));
        }

        int length = encoder.Finish();
        ReadOnlySpan<byte> stream = buffer.AsSpan(0, length);
        var decoder = new RangeDecoder(stream, out byte leading);
        Assert.Equal(0, leading);
        for (int i = 0; i < Count; i++)
        {
            int[] cdf = cdfs[i % Tables];
            uint target = decoder.GetTarget();
            Assert.True(target < 1 << 16);
            int symbol = Array.FindLastIndex(cdf, n - 1, n, v => v <= target);
            Assert.Equal(symbols[i], symbol);
            decoder.Consume((uint)cdf[symbol], (uint)(cdf[symbol + 1] - cdf[symbol]));
        }

        Assert.Equal(length, decoder.Position);
    }

    [Fact]
    public void Encode_OneCertainSymbol_TakesOnlyTheFlush()
    {
        var buffer = new byte[RangeEncoder.MaxEncodedLength(1000)];
        var encoder = new RangeEncoder(buffer);
        for (int i = 0; i < 1000; i++)
        {
            // frequency 65535 of 65536: about 2.2e-5 bits each.
            encoder.Encode(1, (1 << 16) - 1);
        }

        Assert.True(encoder.Finish() <= 6);
    }
}
