using KvFetcher.Codecs.Entropy;
using KvFetcher.Core;

namespace KvFetcher.Codecs.Tests.Entropy;

public class SegmentTableTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(8191)]
    [InlineData(8192)]
    [InlineData(8193)]
    public void Decode_SegmentsOfOneTable_EachRoundTripsOnItsOwn(int length)
    {
        byte[] symbols = Skewed(3 * length, seed: length);
        var histogram = new int[256];
        StaticRans.Count(symbols, histogram);
        var table = new StaticRans.SegmentTable();
        table.Build(histogram, symbols.Length);
        var tableBytes = new byte[StaticRans.MaxTableBytes];
        int tableLength = table.Write(tableBytes);
        var read = new StaticRans.SegmentTable();
        Assert.Equal(tableLength, read.Read(tableBytes.AsSpan(0, tableLength), 0));

        // Three segments coded with one table, decoded in reverse order by the table read back.
        var streams = new byte[3][];
        for (int s = 0; s < 3; s++)
        {
            var destination = new byte[(2 * length) + 16];
            int written = table.TryEncode(symbols.AsSpan(s * length, length), destination);
            Assert.True(written >= 8);
            streams[s] = destination[..written];
        }

        for (int s = 2; s >= 0; s--)
        {
            var decoded = new byte[length];
            read.Decode(streams[s], decoded, 0);
            Assert.Equal(symbols.AsSpan(s * length, length).ToArray(), decoded);
        }
    }

    [Fact]
    public void Decode_SingleSymbolTable_RoundTrips()
    {
        byte[] symbols = [.. Enumerable.Repeat((byte)200, 5000)];
        var histogram = new int[256];
        StaticRans.Count(symbols, histogram);
        var table = new StaticRans.SegmentTable();
        table.Build(histogram, symbols.Length);
        var destination = new byte[64];
        int written = table.TryEncode(symbols, destination);
        Assert.Equal(8, written);
        var decoded = new byte[symbols.Length];
        table.Decode(destination.AsSpan(0, written), decoded, 0);
        Assert.Equal(symbols, decoded);
    }

    [Fact]
    public void Decode_TruncatedLengthenedOrGarbledSegment_InvalidKvData()
    {
        byte[] symbols = Skewed(4000, seed: 9);
        var histogram = new int[256];
        StaticRans.Count(symbols, histogram);
        var table = new StaticRans.SegmentTable();
        table.Build(histogram, symbols.Length);
        var destination = new byte[10_000];
        int written = table.TryEncode(symbols, destination);
        byte[] stream = destination[..written];
        var decoded = new byte[symbols.Length];
        Assert.Throws<InvalidKvDataException>(() => table.Decode(stream.AsSpan(0, stream.Length - 1), decoded, 0));
        Assert.Throws<InvalidKvDataException>(() => table.Decode([.. stream, 0], decoded, 0));
        Assert.Throws<InvalidKvDataException>(() => table.Decode(stream.AsSpan(0, 7), decoded, 0));
        byte[] garbled = (byte[])stream.Clone();
        garbled[0] ^= 0x10;
        Assert.Throws<InvalidKvDataException>(() => table.Decode(garbled, decoded, 0));
        Assert.Throws<InvalidKvDataException>(() => table.Decode(stream, new byte[symbols.Length - 1], 0));
    }

    [Fact]
    public void Read_TableOfAnotherScaleOrWrongSum_InvalidKvData()
    {
        var histogram = new int[256];
        histogram[1] = 3;
        histogram[9] = 5;
        var table = new StaticRans.SegmentTable();
        table.Build(histogram, 8);
        var bytes = new byte[StaticRans.MaxTableBytes];
        int length = table.Write(bytes);
        byte[] scale = bytes[..length];
        scale[0] = 13;
        Assert.Throws<InvalidKvDataException>(() => new StaticRans.SegmentTable().Read(scale, 0));
        byte[] sum = bytes[..length];
        sum[^1] ^= 0x01;
        Assert.Throws<InvalidKvDataException>(() => new StaticRans.SegmentTable().Read(sum, 0));
        Assert.Throws<InvalidKvDataException>(() => new StaticRans.SegmentTable().Read(bytes.AsSpan(0, length - 1), 0));
    }

    private static byte[] Skewed(int length, int seed)
    {
        var random = new Random(seed);
        var symbols = new byte[length];
        for (int i = 0; i < length; i++)
        {
            symbols[i] = random.Next(500) == 0 ? (byte)255 : (byte)Math.Min(254, 127 + (int)(-Math.Log(1 - random.NextDouble()) * 3 * (random.Next(2) * 2 - 1)));
        }

        return symbols;
    }
}
