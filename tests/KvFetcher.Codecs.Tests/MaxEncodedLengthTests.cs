using System.Buffers;
using KvFetcher.Codecs.Raw;
using KvFetcher.Codecs.Video;
using KvFetcher.Core;
using KvFetcher.Core.Containers;

namespace KvFetcher.Codecs.Tests;

/// <summary><see cref="IKvCodec.GetMaxEncodedLength"/> bounds what every codec writes, on its worst input.</summary>
public class MaxEncodedLengthTests
{
    public static TheoryData<string, DType> Variants() => new()
    {
        { "raw", DType.Float16 },
        { "exact", DType.Float16 },
        { "exact", DType.Float32 },
        { "cachegen0", DType.Float16 },
        { "cachegen2", DType.BFloat16 },
        { "cachegenp0", DType.Float16 },
        { "cachegenp6", DType.Float32 },
        { "video12", DType.Float16 },
        { "video8", DType.Float32 },
        { "video4", DType.Float16 },
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public void GetMaxEncodedLength_NoiseAndConstantInput_BoundsWhatEncodeWrites(string variant, DType dtype)
    {
        (IKvCodec codec, int level) = KvCodecs.ParseVariant(variant);
        if (codec.Unavailable is { } reason)
        {
            Assert.Skip(reason);
        }

        var shape = new KvShape(Layers: 2, Tokens: 64, KvHeads: 2, HeadDim: 16);
        long bound = codec.GetMaxEncodedLength(shape, dtype, level);
        foreach (byte[] kv in new[] { Noise(shape, dtype, seed: 1), Constant(shape, dtype) })
        {
            var parameters = new ArrayBufferWriter<byte>();
            var payload = new ArrayBufferWriter<byte>();
            codec.Encode(kv, shape, dtype, 0, level, parameters, payload);

            long written = parameters.WrittenCount + payload.WrittenCount;
            Assert.True(written <= bound, $"{variant} {dtype.ToShortName()}: wrote {written} bytes; the bound is {bound}");
            Assert.True(ChunkContainer.GetSize(parameters.WrittenCount, payload.WrittenCount, authenticated: true) <= codec.GetMaxContainerLength(shape, dtype, level));
        }
    }

    [Fact]
    public void GetMaxEncodedLength_Raw_IsExactlyTheValues()
    {
        var shape = new KvShape(4, 256, 8, 64);

        Assert.Equal(shape.Elements * 2, RawCodec.Instance.GetMaxEncodedLength(shape, DType.BFloat16, 0));
        // Raw is layer-addressable: its largest container has a layer table of one layer per group.
        int table = ChunkLayerTable.SizeOf(shape.Layers, 1);
        Assert.Equal(ChunkContainer.GetSize(0, shape.Elements * 4) + table, RawCodec.Instance.GetMaxContainerLength(shape, DType.Float32, 0, authenticated: false));
        Assert.Equal(ChunkContainer.GetSize(0, shape.Elements * 4, authenticated: true) + table, RawCodec.Instance.GetMaxContainerLength(shape, DType.Float32, 0));
    }

    [Fact]
    public void GetMaxEncodedLength_LossyCodecs_NoLargerThanTwiceTheValues()
    {
        // What the fetcher used to guess for every slot (twice the values and 1 MiB) holds for a real model's shape.
        var shape = new KvShape(32, 256, 8, 128);
        long values = shape.Elements * 2;
        foreach (string variant in (string[])["exact", "cachegen0", "video8"])
        {
            (IKvCodec codec, int level) = KvCodecs.ParseVariant(variant);
            Assert.InRange(codec.GetMaxEncodedLength(shape, DType.Float16, level), 1, (2 * values) + (1 << 20));
        }
    }

    [Fact]
    public void GetMaxEncodedLength_UnknownLevel_Refused()
    {
        var shape = new KvShape(1, 16, 1, 16);
        Assert.ThrowsAny<Exception>(() => VideoCodec.Instance.GetMaxEncodedLength(shape, DType.Float16, 7));
        Assert.ThrowsAny<Exception>(() => KvCodecs.Get("cachegen").GetMaxEncodedLength(shape, DType.Float16, 9));
        Assert.Throws<ArgumentOutOfRangeException>(() => RawCodec.Instance.GetMaxEncodedLength(shape with { Tokens = 0 }, DType.Float16, 0));
    }

    /// <summary>Uniform random finite values: no codec finds structure in them.</summary>
    private static byte[] Noise(KvShape shape, DType dtype, int seed)
    {
        var random = new Random(seed);
        var values = new float[shape.Elements];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = (float)((random.NextDouble() * 200) - 100);
        }

        return Encode(values, dtype);
    }

    private static byte[] Constant(KvShape shape, DType dtype) => Encode([.. Enumerable.Repeat(0.5f, (int)shape.Elements)], dtype);

    private static byte[] Encode(float[] values, DType dtype)
    {
        var bytes = new byte[values.Length * dtype.SizeOf()];
        Core.Numerics.FloatConversions.FromSingle(dtype, values, bytes);
        return bytes;
    }
}
