using System.Buffers;
using System.Diagnostics;
using KvFetcher.Codecs.CacheGen;
using KvFetcher.Core;
using KvFetcher.Core.Numerics;

namespace KvFetcher.Codecs.Tests.CacheGen;

public class CacheGenCodecTests(ITestOutputHelper output)
{
    private static readonly CacheGenCodec s_codec = CacheGenCodec.Instance;

    [Theory]
    [InlineData(DType.Float16, 0)]
    [InlineData(DType.Float16, 1)]
    [InlineData(DType.Float16, 2)]
    [InlineData(DType.BFloat16, 0)]
    [InlineData(DType.Float32, 0)]
    public void Decode_RealKv_EqualsReferenceDequantization(DType dtype, int level)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(256, 256, dtype);

        byte[] decoded = RoundTrip(kv, shape, dtype, level, out _, out _);

        Assert.Equal(ReferenceDecode(kv, shape, dtype, level), decoded);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    public void Decode_SixteenLayersOfRealKv_EqualsReferenceWithSecondBins(int level)
    {
        // Two 8-layer chunks stacked along the layer axis: a 16-layer model, where LMCache's split applies
        // (K layers 0-9 and V layers 0-1 at the first bin count, the rest at the second).
        (byte[] first, KvShape shape) = RealKv.Chunk(0, 128, DType.Float16);
        (byte[] second, _) = RealKv.Chunk(128, 128, DType.Float16);
        byte[] kv = [.. first, .. second];
        shape = shape with { Layers = shape.Layers * 2 };

        byte[] decoded = RoundTrip(kv, shape, DType.Float16, level, out _, out _);

        Assert.Equal(ReferenceDecode(kv, shape, DType.Float16, level), decoded);
    }

    [Theory]
    [InlineData(DType.Float16, 0)]
    [InlineData(DType.Float16, 1)]
    [InlineData(DType.Float16, 2)]
    [InlineData(DType.BFloat16, 0)]
    public void Decode_RealKv_ErrorWithinHalfAStepPerElement(DType dtype, int level)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 256, dtype);
        byte[] decoded = RoundTrip(kv, shape, dtype, level, out _, out _);
        var x = new float[shape.Elements];
        var y = new float[shape.Elements];
        FloatConversions.ToSingle(dtype, kv, x);
        FloatConversions.ToSingle(dtype, decoded, y);
        float dtypeEpsilon = dtype == DType.BFloat16 ? 1f / 256 : 1f / 2048;

        int channels = shape.Channels;
        double worst = 0;
        for (int plane = 0; plane < shape.Layers * 2; plane++)
        {
            int bins = ReferenceBins(level, shape.Layers, plane >> 1, plane & 1);
            for (int t = 0; t < shape.Tokens; t++)
            {
                int start = ((plane * shape.Tokens) + t) * channels;
                float absMax = x.AsSpan(start, channels).ToArray().Max(MathF.Abs);

                // Half a quantization step: scale / (bins - 2), the scale being the abs-max (fp16-rounded up).
                float halfStep = absMax * (1 + (1f / 1024)) / (bins - 2);
                for (int c = start; c < start + channels; c++)
                {
                    float error = MathF.Abs(x[c] - y[c]);
                    Assert.True(error <= halfStep + (MathF.Abs(y[c]) * dtypeEpsilon) + 1e-7f, $"plane {plane} token {t} element {c}: |{x[c]} - {y[c]}| > {halfStep}");
                    worst = Math.Max(worst, halfStep > 0 ? error / halfStep : 0);
                }
            }
        }

        output.WriteLine($"{dtype.ToShortName()} level {level}: worst error / half step = {worst:F3}");
        Assert.True(worst > 0.5, "a lossy quantizer shows errors near half a step somewhere");
    }

    [Fact]
    public void Encode_RealKvEveryLevel_SmallerThanFp16AndCoarserLevelsSmaller()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(256, 256, DType.Float16);
        double previous = 0;
        foreach (int level in s_codec.Levels)
        {
            const int Repetitions = 3;
            var parameters = new ArrayBufferWriter<byte>();
            var payload = new ArrayBufferWriter<byte>();
            var decoded = new byte[kv.Length];
            s_codec.Encode(kv, shape, DType.Float16, 0, level, parameters, payload);
            s_codec.Decode(parameters.WrittenSpan, payload.WrittenSpan, shape, DType.Float16, 0, level, decoded);
            var encodeTime = Stopwatch.StartNew();
            for (int i = 0; i < Repetitions; i++)
            {
                parameters.ResetWrittenCount();
                payload.ResetWrittenCount();
                s_codec.Encode(kv, shape, DType.Float16, 0, level, parameters, payload);
            }

            encodeTime.Stop();
            var decodeTime = Stopwatch.StartNew();
            for (int i = 0; i < Repetitions; i++)
            {
                s_codec.Decode(parameters.WrittenSpan, payload.WrittenSpan, shape, DType.Float16, 0, level, decoded);
            }

            decodeTime.Stop();
            double ratio = (double)kv.Length / (parameters.WrittenCount + payload.WrittenCount);
            double megabytes = Repetitions * kv.Length / 1e6;
            output.WriteLine(
                $"level {level}: {kv.Length} fp16 bytes -> {parameters.WrittenCount} parameters + {payload.WrittenCount} payload = {ratio:F2}x smaller; " +
                $"encode {megabytes / encodeTime.Elapsed.TotalSeconds:F1} MB/s, decode {megabytes / decodeTime.Elapsed.TotalSeconds:F1} MB/s (fp16 bytes, one thread)");
            Assert.True(ratio > previous, $"level {level} ratio {ratio:F2} is not above the previous level's {previous:F2}");
            Assert.True(ratio > 2, $"level {level} ratio {ratio:F2}");
            previous = ratio;
        }
    }

    [Fact]
    public void Decode_TruncatedOrBitFlippedInput_OnlyThrowsInvalidKvData()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(512, 16, DType.Float16);
        output.WriteLine(CorruptInput.AssertOnlyInvalidKvData(s_codec, kv, shape, level: 0, "cachegen: "));
    }

    [Fact]
    public void Decode_OtherShapeOrLevel_ThrowsNamingTheMismatch()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 8, DType.Float16);
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        s_codec.Encode(kv, shape, DType.Float16, 0, 1, parameters, payload);

        InvalidKvDataException level = Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(parameters.WrittenSpan, payload.WrittenSpan, shape, DType.Float16, 0, 2, new byte[kv.Length]));
        Assert.Contains("level 1", level.Message, StringComparison.Ordinal);
        KvShape other = shape with { KvHeads = shape.KvHeads * 2 };
        InvalidKvDataException channels = Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(parameters.WrittenSpan, payload.WrittenSpan, other, DType.Float16, 0, 1, new byte[kv.Length * 2]));
        Assert.Contains("layers/tokens/channels", channels.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(parameters.WrittenSpan, payload.WrittenSpan, shape, DType.Float16, 0, 7, new byte[kv.Length]));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void Decode_FewRealTokens_EqualsReference(int tokens)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(100, tokens, DType.BFloat16);

        byte[] decoded = RoundTrip(kv, shape, DType.BFloat16, 0, out _, out _);

        Assert.Equal(ReferenceDecode(kv, shape, DType.BFloat16, 0), decoded);
    }

    [Theory]
    [InlineData(1, 1, 1, 1)]
    [InlineData(12, 3, 1, 5)]
    [InlineData(2, 1, 3, 7)]
    public void Decode_OddSyntheticShapes_EqualsReference(int layers, int tokens, int heads, int headDim)
    {
        var shape = new KvShape(layers, tokens, heads, headDim);
        var random = new Random(layers * 1000 + tokens);
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
            byte[] decoded = RoundTrip(kv, shape, DType.Float32, level, out _, out _);
            Assert.Equal(ReferenceDecode(kv, shape, DType.Float32, level), decoded);
        }
    }

    [Fact]
    public void EncodeDecode_WarmedUp_AllocateNothingPerChunk() => CodecAllocations.AssertWarmedUpAllocatesNothing(s_codec);

    [Fact]
    public void Encode_NonFiniteValue_ThrowsArgumentException()
    {
        var shape = new KvShape(1, 2, 1, 2);
        float[] values = [1, 2, 3, float.NaN, 0, 0, 0, 0];
        var kv = new byte[values.Length * 4];
        FloatConversions.FromSingle(DType.Float32, values, kv);

        Assert.Throws<ArgumentException>(() => s_codec.Encode(kv, shape, DType.Float32, 0, 0, new ArrayBufferWriter<byte>(), new ArrayBufferWriter<byte>()));
    }

    [Theory]
    [InlineData(0, 32, 0, 0, 32)]
    [InlineData(0, 32, 9, 0, 32)]
    [InlineData(0, 32, 10, 0, 16)]
    [InlineData(0, 32, 1, 1, 32)]
    [InlineData(0, 32, 2, 1, 16)]
    [InlineData(0, 8, 7, 1, 32)]
    [InlineData(1, 32, 0, 0, 16)]
    [InlineData(2, 40, 39, 1, 4)]
    public void Bins_LMCacheLayerSplit_MatchesItsTable(int level, int layers, int layer, int kind, int expected)
    {
        Assert.Equal(expected, CacheGenBins.Of(level, layers, layer, kind));
    }

    private static byte[] RoundTrip(byte[] kv, KvShape shape, DType dtype, int level, out byte[] parameters, out byte[] payload)
    {
        var parameterWriter = new ArrayBufferWriter<byte>();
        var payloadWriter = new ArrayBufferWriter<byte>();
        s_codec.Encode(kv, shape, dtype, 0, level, parameterWriter, payloadWriter);
        parameters = parameterWriter.WrittenSpan.ToArray();
        payload = payloadWriter.WrittenSpan.ToArray();
        var decoded = new byte[kv.Length];
        s_codec.Decode(parameters, payload, shape, dtype, 0, level, decoded);
        return decoded;
    }

    /// <summary>LMCache's bins restated: fewer than 10 layers all first bins, else K layers &lt; 10 and V layers &lt; 2.</summary>
    private static int ReferenceBins(int level, int layers, int layer, int kind)
    {
        int firstLayers = layers < 10 ? layers : kind == 0 ? 10 : 2;
        return layer < firstLayers ? 32 >> level : 16 >> level;
    }

    /// <summary>
    /// Quantize and dequantize directly, with no entropy coding: per (layer, K/V, token) vector, scale = abs-max
    /// rounded up to fp16, q = round(x * max / scale) clamped to [-max, max], x' = q * (scale / max).
    /// </summary>
    private static byte[] ReferenceDecode(byte[] kv, KvShape shape, DType dtype, int level)
    {
        var x = new float[shape.Elements];
        FloatConversions.ToSingle(dtype, kv, x);
        var y = new float[x.Length];
        int channels = shape.Channels;
        for (int plane = 0; plane < shape.Layers * 2; plane++)
        {
            int max = (ReferenceBins(level, shape.Layers, plane >> 1, plane & 1) / 2) - 1;
            for (int t = 0; t < shape.Tokens; t++)
            {
                int start = ((plane * shape.Tokens) + t) * channels;
                float absMax = 0;
                for (int c = start; c < start + channels; c++)
                {
                    absMax = Math.Max(absMax, Math.Abs(x[c]));
                }

                Half scale = Half.MaxValue;
                if (absMax < 65504f)
                {
                    scale = (Half)absMax;
                    if ((float)scale < absMax)
                    {
                        scale = Half.BitIncrement(scale);
                    }
                }

                float factor = absMax == 0 ? 0 : max / (float)scale;
                float step = (float)scale / max;
                for (int c = start; c < start + channels; c++)
                {
                    int q = Math.Clamp((int)MathF.Round(x[c] * factor), -max, max);
                    y[c] = q * step;
                }
            }
        }

        var bytes = new byte[kv.Length];
        FloatConversions.FromSingle(dtype, y, bytes);
        return bytes;
    }
}
