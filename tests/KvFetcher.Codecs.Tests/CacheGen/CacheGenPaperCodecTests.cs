using System.Buffers;
using System.Buffers.Binary;
using KvFetcher.Codecs.CacheGen;
using KvFetcher.Core;
using KvFetcher.Core.Numerics;

namespace KvFetcher.Codecs.Tests.CacheGen;

public class CacheGenPaperCodecTests(ITestOutputHelper output)
{
    private const int AnchorMagnitude = 127;
    private const int Group = 10;
    private static readonly int[][] s_magnitudes = [[127, 95, 63], [95, 71, 47], [63, 47, 31], [47, 35, 23], [31, 23, 15], [15, 11, 7], [7, 5, 3]];
    private static readonly CacheGenPaperCodec s_codec = CacheGenPaperCodec.Instance;

    [Theory]
    [InlineData(DType.Float16, 0)]
    [InlineData(DType.Float16, 2)]
    [InlineData(DType.Float16, 6)]
    [InlineData(DType.BFloat16, 1)]
    [InlineData(DType.Float32, 3)]
    public void Decode_RealKv_EqualsReferenceDequantization(DType dtype, int level)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(256, 256, dtype);

        byte[] decoded = RoundTrip(kv, shape, dtype, level);

        Assert.Equal(ReferenceDecode(kv, shape, dtype, level), decoded);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(6)]
    public void Decode_RealKv_ErrorWithinHalfAStepOfTheLayersBins(int level)
    {
        // fp32 output holds the decoder's values exactly, so a decoded anchor is the anchor its deltas were taken from.
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 256, DType.Float32);
        byte[] decoded = RoundTrip(kv, shape, DType.Float32, level);
        float[] x = ToFloats(kv, DType.Float32);
        float[] y = ToFloats(decoded, DType.Float32);
        int channels = shape.Channels;
        double worstAnchor = 0;
        double worstDelta = 0;
        for (int plane = 0; plane < shape.Layers * 2; plane++)
        {
            int magnitude = s_magnitudes[level][(plane >> 1) * 3 / shape.Layers];
            float anchorScale = 0;
            for (int t = 0; t < shape.Tokens; t++)
            {
                int start = ((plane * shape.Tokens) + t) * channels;
                int anchorStart = ((plane * shape.Tokens) + (t - (t % Group))) * channels;
                bool isAnchor = t % Group == 0;
                float range = 0;
                for (int c = 0; c < channels; c++)
                {
                    range = Math.Max(range, MathF.Abs(isAnchor ? x[start + c] : x[start + c] - y[anchorStart + c]));
                }

                if (isAnchor)
                {
                    anchorScale = range;
                }

                // Half a step: the scale (fp16-rounded up) over twice the largest magnitude.
                float halfStep = (isAnchor ? range : Math.Max(range, anchorScale)) * (1 + (1f / 1024)) / (2 * (isAnchor ? AnchorMagnitude : magnitude));
                for (int c = start; c < start + channels; c++)
                {
                    float error = MathF.Abs(x[c] - y[c]);
                    Assert.True(error <= (halfStep * 1.0001f) + 1e-7f, $"plane {plane} token {t} element {c}: |{x[c]} - {y[c]}| > {halfStep}");
                    double relative = halfStep > 0 ? error / halfStep : 0;
                    if (isAnchor)
                    {
                        worstAnchor = Math.Max(worstAnchor, relative);
                    }
                    else
                    {
                        worstDelta = Math.Max(worstDelta, relative);
                    }
                }
            }
        }

        output.WriteLine($"level {level}: worst error / half step: anchors {worstAnchor:F3}, deltas {worstDelta:F3}");
        Assert.True(worstAnchor > 0.5 && worstDelta > 0.5, "a lossy quantizer shows errors near half a step somewhere");
    }

    [Fact]
    public void Decode_RealKvAnchors_WithinTheEightBitStepAtEveryLevel()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(512, 64, DType.Float16);
        float[] x = ToFloats(kv, DType.Float16);
        foreach (int level in s_codec.Levels)
        {
            float[] y = ToFloats(RoundTrip(kv, shape, DType.Float16, level), DType.Float16);
            for (int plane = 0; plane < shape.Layers * 2; plane++)
            {
                for (int t = 0; t < shape.Tokens; t += Group)
                {
                    int start = ((plane * shape.Tokens) + t) * shape.Channels;
                    float absMax = x.AsSpan(start, shape.Channels).ToArray().Max(MathF.Abs);
                    float halfStep = absMax * (1 + (1f / 1024)) / (2 * AnchorMagnitude);
                    for (int c = start; c < start + shape.Channels; c++)
                    {
                        // Plus fp16's rounding of the output.
                        Assert.True(MathF.Abs(x[c] - y[c]) <= halfStep + (MathF.Abs(y[c]) / 2048) + 1e-7f, $"level {level} plane {plane} anchor {t}: |{x[c]} - {y[c]}| > {halfStep}");
                    }
                }
            }
        }
    }

    [Fact]
    public void Encode_TokensCorrelatedInTime_SmallerThanTheSameTokensShuffled()
    {
        // A random walk per channel: neighbouring tokens are alike, so deltas to the anchor are small. Shuffling the
        // tokens keeps every value (and every per-channel distribution) but breaks the locality the anchors use.
        var shape = new KvShape(Layers: 4, Tokens: 200, KvHeads: 2, HeadDim: 32);
        var random = new Random(11);
        var values = new float[shape.Elements];
        int channels = shape.Channels;
        for (int plane = 0; plane < shape.Layers * 2; plane++)
        {
            for (int c = 0; c < channels; c++)
            {
                float walk = (float)(random.NextDouble() * 4) - 2;
                for (int t = 0; t < shape.Tokens; t++)
                {
                    walk += (float)(random.NextDouble() - 0.5) * 0.05f;
                    values[(((plane * shape.Tokens) + t) * channels) + c] = walk;
                }
            }
        }

        int[] order = [.. Enumerable.Range(0, shape.Tokens).OrderBy(_ => random.Next())];
        var shuffled = new float[values.Length];
        for (int plane = 0; plane < shape.Layers * 2; plane++)
        {
            for (int t = 0; t < shape.Tokens; t++)
            {
                values.AsSpan(((plane * shape.Tokens) + order[t]) * channels, channels).CopyTo(shuffled.AsSpan(((plane * shape.Tokens) + t) * channels, channels));
            }
        }

        foreach (int level in s_codec.Levels)
        {
            long correlated = EncodedSize(values, shape, level);
            long scrambled = EncodedSize(shuffled, shape, level);
            output.WriteLine($"level {level}: correlated {correlated} bytes, shuffled {scrambled} bytes ({(double)scrambled / correlated:F2}x)");
            Assert.True(correlated * 1.3 < scrambled, $"level {level}: correlated tokens take {correlated} bytes, shuffled {scrambled}");
        }

        // The same on the bundled model's real KV, reported (how much locality the anchors find there).
        (byte[] real, KvShape realShape) = RealKv.Chunk(256, 256, DType.Float16);
        float[] realValues = ToFloats(real, DType.Float16);
        var realShuffled = new float[realValues.Length];
        int[] realOrder = [.. Enumerable.Range(0, realShape.Tokens).OrderBy(_ => random.Next())];
        for (int plane = 0; plane < realShape.Layers * 2; plane++)
        {
            for (int t = 0; t < realShape.Tokens; t++)
            {
                realValues.AsSpan(((plane * realShape.Tokens) + realOrder[t]) * realShape.Channels, realShape.Channels)
                    .CopyTo(realShuffled.AsSpan(((plane * realShape.Tokens) + t) * realShape.Channels, realShape.Channels));
            }
        }

        foreach (int level in new[] { 0, 2, 4 })
        {
            output.WriteLine($"real KV, level {level}: in order {EncodedSize(realValues, realShape, level)} bytes, tokens shuffled {EncodedSize(realShuffled, realShape, level)} bytes");
        }
    }

    [Fact]
    public void Encode_RealKvEveryLevel_SmallerThanFp16AndCoarserLevelsSmaller()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(256, 256, DType.Float16);
        double previous = 0;
        foreach (int level in s_codec.Levels)
        {
            var parameters = new ArrayBufferWriter<byte>();
            var payload = new ArrayBufferWriter<byte>();
            s_codec.Encode(kv, shape, DType.Float16, 0, level, parameters, payload);
            double ratio = (double)kv.Length / (parameters.WrittenCount + payload.WrittenCount);
            output.WriteLine($"level {level}: {kv.Length} fp16 bytes -> {parameters.WrittenCount} parameters + {payload.WrittenCount} payload = {ratio:F2}x smaller");
            Assert.True(ratio > previous, $"level {level} ratio {ratio:F2} is not above the previous level's {previous:F2}");
            previous = ratio;
        }

        Assert.True(previous > 4, $"the coarsest level is only {previous:F2}x smaller than fp16");
    }

    [Fact]
    public void Decode_TruncatedOrBitFlippedInput_OnlyThrowsInvalidKvData()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(512, 24, DType.Float16);
        output.WriteLine(CorruptInput.AssertOnlyInvalidKvData(s_codec, kv, shape, level: 1, "cachegenp: "));
    }

    [Theory]
    [InlineData(0, 9, "format version")]
    [InlineData(1, 3, "level 3")]
    [InlineData(2, 99, "layers/tokens/channels")]
    [InlineData(12, 0, "group tokens 0")]
    [InlineData(14, 1, "offset 14: reserved byte 1")]
    public void Decode_CorruptHeaderField_ThrowsNamingTheField(int offset, byte value, string expected)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 12, DType.Float16);
        (byte[] parameters, byte[] payload) = Encode(kv, shape, DType.Float16, 1);
        parameters[offset] = value;

        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(parameters, payload, shape, DType.Float16, 0, 1, new byte[kv.Length]));

        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Decode_CorruptModelsOrScale_ThrowsNamingTheField()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 12, DType.Float16);
        (byte[] parameters, byte[] payload) = Encode(kv, shape, DType.Float16, 6);
        int channels = shape.Channels;
        var destination = new byte[kv.Length];

        byte[] centre = (byte[])payload.Clone();
        centre[2 * channels] = 200; // the first delta centre; level 6's first layers have 15 symbols
        Assert.Contains("delta model centre of layer 0 K channel 0", Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(parameters, centre, shape, DType.Float16, 0, 6, destination)).Message, StringComparison.Ordinal);

        byte[] anchorShape = (byte[])payload.Clone();
        anchorShape[channels + 5] = 64;
        Assert.Contains("anchor model shape of layer 0 K channel 5", Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(parameters, anchorShape, shape, DType.Float16, 0, 6, destination)).Message, StringComparison.Ordinal);

        byte[] scale = (byte[])parameters.Clone();
        BinaryPrimitives.WriteUInt16LittleEndian(scale.AsSpan(16 + (4 * shape.Layers * 2)), BitConverter.HalfToUInt16Bits(Half.NaN));
        Assert.Contains("scale of layer 0 K token 0", Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(scale, payload, shape, DType.Float16, 0, 6, destination)).Message, StringComparison.Ordinal);

        byte[] length = (byte[])parameters.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(length.AsSpan(16), uint.MaxValue);
        Assert.Contains("stream length", Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(length, payload, shape, DType.Float16, 0, 6, destination)).Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(1, 1, 1, 1)]
    [InlineData(12, 3, 1, 5)]
    [InlineData(2, 23, 3, 7)]
    public void Decode_OddSyntheticShapes_EqualsReference(int layers, int tokens, int heads, int headDim)
    {
        var shape = new KvShape(layers, tokens, heads, headDim);
        var random = new Random((layers * 1000) + tokens);
        var values = new float[shape.Elements];
        for (int i = 0; i < values.Length; i++)
        {
            // Some all-zero vectors (scale 0) and some huge values beyond fp16 (scale clamps at 65504).
            values[i] = i % 11 < 3 ? 0 : (float)(random.NextDouble() - 0.5) * (i % 13 == 0 ? 1e6f : 4f);
        }

        var kv = new byte[shape.Elements * 4];
        FloatConversions.FromSingle(DType.Float32, values, kv);
        foreach (int level in s_codec.Levels)
        {
            Assert.Equal(ReferenceDecode(kv, shape, DType.Float32, level), RoundTrip(kv, shape, DType.Float32, level));
        }
    }

    [Fact]
    public void EncodeDecode_WarmedUp_AllocateNothingPerChunk() => CodecAllocations.AssertWarmedUpAllocatesNothing(s_codec);

    [Theory]
    [InlineData(32, 0, 0)]
    [InlineData(32, 10, 0)]
    [InlineData(32, 11, 1)]
    [InlineData(32, 21, 1)]
    [InlineData(32, 22, 2)]
    [InlineData(32, 31, 2)]
    [InlineData(1, 0, 0)]
    [InlineData(2, 1, 1)]
    public void LayerGroup_ThirdsOfTheDepth_EarlyLayersFirst(int layers, int layer, int expected)
    {
        Assert.Equal(expected, CacheGenPaperBins.LayerGroup(layers, layer));
        Assert.True(CacheGenPaperBins.DeltaMagnitude(0, 32, 0) > CacheGenPaperBins.DeltaMagnitude(0, 32, 15));
        Assert.True(CacheGenPaperBins.DeltaMagnitude(0, 32, 15) > CacheGenPaperBins.DeltaMagnitude(0, 32, 31));
    }

    [Fact]
    public void LaplaceModels_EveryTable_RisesStrictlyToTheTotalAndBucketsPointBelowTheirSlice()
    {
        foreach (int symbols in CacheGenPaperBins.AlphabetSizes)
        {
            for (int parameter = 0; parameter < LaplaceModels.ParameterCount; parameter++)
            {
                ReadOnlySpan<int> cdf = LaplaceModels.Cdfs.Slice(LaplaceModels.CdfOffset(symbols, parameter), symbols + 1);
                Assert.Equal(0, cdf[0]);
                Assert.Equal(1 << 16, cdf[symbols]);
                for (int j = 0; j < symbols; j++)
                {
                    Assert.True(cdf[j + 1] > cdf[j]);
                }

                ReadOnlySpan<byte> buckets = LaplaceModels.Buckets.Slice(LaplaceModels.BucketOffset(symbols, parameter), 256);
                for (int b = 0; b < 256; b++)
                {
                    Assert.True(cdf[buckets[b]] <= b << 8 && cdf[buckets[b] + 1] > b << 8);
                }

                for (int center = 0; center < symbols; center += 1 + (symbols / 7))
                {
                    for (int s = 0; s < symbols; s++)
                    {
                        Assert.Equal(s, LaplaceModels.SymbolOf(LaplaceModels.IndexOf(s, center, symbols), center, symbols));
                    }
                }
            }
        }
    }

    [Fact]
    public void LaplaceModels_Fit_NarrowCountsGetANarrowerShapeAroundTheirMedian()
    {
        var narrow = new int[31];
        var wide = new int[31];
        narrow[20] = 90;
        narrow[19] = narrow[21] = 5;
        for (int s = 0; s < 31; s++)
        {
            wide[s] = 10 + (s % 3);
        }

        (int narrowCenter, int narrowShape) = LaplaceModels.Fit(narrow);
        (_, int wideShape) = LaplaceModels.Fit(wide);

        Assert.Equal(20, narrowCenter);
        Assert.True(narrowShape < wideShape, $"narrow {narrowShape}, wide {wideShape}");
        Assert.Equal((15, 0), LaplaceModels.Fit(new int[31]));
    }

    private static long EncodedSize(float[] values, KvShape shape, int level)
    {
        var kv = new byte[values.Length * 2];
        FloatConversions.FromSingle(DType.Float16, values, kv);
        (byte[] parameters, byte[] payload) = Encode(kv, shape, DType.Float16, level);
        return parameters.Length + payload.Length;
    }

    private static (byte[] Parameters, byte[] Payload) Encode(byte[] kv, KvShape shape, DType dtype, int level)
    {
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        s_codec.Encode(kv, shape, dtype, 0, level, parameters, payload);
        return (parameters.WrittenSpan.ToArray(), payload.WrittenSpan.ToArray());
    }

    private static byte[] RoundTrip(byte[] kv, KvShape shape, DType dtype, int level)
    {
        (byte[] parameters, byte[] payload) = Encode(kv, shape, dtype, level);
        var decoded = new byte[kv.Length];
        s_codec.Decode(parameters, payload, shape, dtype, 0, level, decoded);
        return decoded;
    }

    private static float[] ToFloats(byte[] bytes, DType dtype)
    {
        var values = new float[bytes.Length / dtype.SizeOf()];
        FloatConversions.ToSingle(dtype, bytes, values);
        return values;
    }

    private static Half ScaleOf(float absMax)
    {
        if (absMax >= 65504f)
        {
            return Half.MaxValue;
        }

        var scale = (Half)absMax;
        return (float)scale < absMax ? Half.BitIncrement(scale) : scale;
    }

    /// <summary>
    /// The paper's quantizer restated, no entropy coding: per (layer, K/V) plane, groups of 10 tokens; an anchor is
    /// quantized with scale = its abs-max (fp16, rounded up) and 127 levels a side; a delta token's difference to the
    /// decoded anchor with scale = max(anchor scale, the difference's abs-max) and the layer third's magnitude.
    /// </summary>
    private static byte[] ReferenceDecode(byte[] kv, KvShape shape, DType dtype, int level)
    {
        float[] x = ToFloats(kv, dtype);
        var y = new float[x.Length];
        int channels = shape.Channels;
        var anchor = new float[channels];
        var delta = new float[channels];
        for (int plane = 0; plane < shape.Layers * 2; plane++)
        {
            int magnitude = s_magnitudes[level][(plane >> 1) * 3 / shape.Layers];
            float anchorScale = 0;
            for (int t = 0; t < shape.Tokens; t++)
            {
                int start = ((plane * shape.Tokens) + t) * channels;
                bool isAnchor = t % Group == 0;
                float absMax = 0;
                for (int c = 0; c < channels; c++)
                {
                    delta[c] = isAnchor ? x[start + c] : x[start + c] - anchor[c];
                    absMax = Math.Max(absMax, Math.Abs(delta[c]));
                }

                Half scale = ScaleOf(isAnchor ? absMax : Math.Max(absMax, anchorScale));
                int max = isAnchor ? AnchorMagnitude : magnitude;
                float factor = scale == Half.Zero ? 0 : max / (float)scale;
                float step = (float)scale / max;
                for (int c = 0; c < channels; c++)
                {
                    int q = Math.Clamp((int)MathF.Round(delta[c] * factor), -max, max);
                    y[start + c] = isAnchor ? q * step : anchor[c] + (q * step);
                }

                if (isAnchor)
                {
                    anchorScale = (float)scale;
                    y.AsSpan(start, channels).CopyTo(anchor);
                }
            }
        }

        var bytes = new byte[kv.Length];
        FloatConversions.FromSingle(dtype, y, bytes);
        return bytes;
    }
}
