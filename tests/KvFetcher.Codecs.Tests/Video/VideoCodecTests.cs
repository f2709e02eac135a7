using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using KvFetcher.Codecs.Video;
using KvFetcher.Codecs.Video.Native;
using KvFetcher.Core;
using KvFetcher.Core.Numerics;

namespace KvFetcher.Codecs.Tests.Video;

public class VideoCodecTests(ITestOutputHelper output)
{
    private static readonly VideoCodec s_codec = VideoCodec.Instance;

    [Theory]
    [InlineData(12, VideoLayoutKind.TokenTiles)]
    [InlineData(8, VideoLayoutKind.TokenTiles)]
    [InlineData(4, VideoLayoutKind.ChannelRows)]
    public void FrameMapAndScales_AsAnOutsideDecoderUsesThem_ReproduceDecodeBitForBit(int level, VideoLayoutKind layout)
    {
        // What the GPU restore kernel does with NVDEC's frames (video_restore in Cuda/Gpu/Kernels/Restore.cuh), done here on the CPU:
        // value = min + q * step in fp32 at layerOffsets[l] + tokenOffsets[t] + channelOffsets[c], rounded to fp16.
        var codec = new VideoCodec(layout);
        (byte[] kv, KvShape shape) = RealKv.Chunk(512, 256, DType.Float16);
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        codec.Encode(kv, shape, DType.Float16, 0, level, parameters, payload);
        var expected = new byte[kv.Length];
        codec.Decode(parameters.WrittenSpan, payload.WrittenSpan, shape, DType.Float16, 0, level, expected);

        int scales = shape.Layers * 2 * shape.Channels;
        var mins = new float[scales];
        var steps = new float[scales];
        Assert.Equal(layout, VideoCodec.ReadScales(parameters.WrittenSpan, shape, level, mins, steps));
        var tokenOffsets = new int[shape.Tokens];
        var channelOffsets = new int[shape.Channels];
        var layerOffsets = new int[shape.Layers];
        VideoCodec.FrameOffsets(shape, layout, tokenOffsets, channelOffsets, layerOffsets);
        var restored = new Half[shape.Elements];
        for (int kind = 0; kind < 2; kind++)
        {
            byte[] frames = codec.DecodedFrames(payload.WrittenSpan, shape, level, kind);
            Assert.Equal(VideoCodec.FramesChecksum(frames), BinaryPrimitives.ReadUInt64LittleEndian(payload.WrittenSpan[(kind == 0 ? 4 : 16 + BinaryPrimitives.ReadInt32LittleEndian(payload.WrittenSpan))..]));
            for (int layer = 0; layer < shape.Layers; layer++)
            {
                for (int t = 0; t < shape.Tokens; t++)
                {
                    for (int c = 0; c < shape.Channels; c++)
                    {
                        int at = layerOffsets[layer] + tokenOffsets[t] + channelOffsets[c];
                        int q = level > 8 ? BinaryPrimitives.ReadUInt16LittleEndian(frames.AsSpan(2 * at)) : frames[at];
                        int scale = (((layer * 2) + kind) * shape.Channels) + c;
                        restored[((((layer * 2) + kind) * shape.Tokens) + t) * shape.Channels + c] = (Half)(mins[scale] + (q * steps[scale]));
                    }
                }
            }
        }

        Assert.Equal(expected, System.Runtime.InteropServices.MemoryMarshal.AsBytes(restored.AsSpan()).ToArray());
        Assert.Throws<InvalidKvDataException>(() => VideoCodec.ReadScales(parameters.WrittenSpan, shape, level == 4 ? 6 : 4, mins, steps));
    }

    [Theory]
    [InlineData(12)]
    [InlineData(10)]
    [InlineData(8)]
    [InlineData(6)]
    [InlineData(4)]
    public void Encode_RealKv_DecodedFramesEqualQuantizedFrames(int level)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(256, 256, DType.Float16);
        (_, byte[] payload) = Encode(kv, shape, DType.Float16, level);
        for (int kind = 0; kind < 2; kind++)
        {
            byte[] quantized = s_codec.QuantizedFrames(kv, shape, DType.Float16, level, kind);
            int[] samples = level > 8
                ? [.. System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(quantized).ToArray().Select(q => (int)q)]
                : [.. quantized.Select(q => (int)q)];
            Assert.All(samples, q => Assert.InRange(q, 0, (1 << level) - 1));
            Assert.Equal(1 << level, samples.Max() + 1); // the channel maxima reach the top of the range
            Assert.Equal(quantized, s_codec.DecodedFrames(payload, shape, level, kind));
        }
    }

    [Theory]
    [InlineData(12, DType.Float32, VideoLayoutKind.TokenTiles)]
    [InlineData(10, DType.Float16, VideoLayoutKind.TokenTiles)]
    [InlineData(10, DType.Float16, VideoLayoutKind.ChannelRows)]
    [InlineData(8, DType.Float32, VideoLayoutKind.TokenTiles)]
    [InlineData(6, DType.Float32, VideoLayoutKind.TokenTiles)]
    [InlineData(4, DType.Float32, VideoLayoutKind.TokenTiles)]
    [InlineData(8, DType.BFloat16, VideoLayoutKind.TokenTiles)]
    [InlineData(8, DType.Float16, VideoLayoutKind.ChannelRows)]
    [InlineData(4, DType.Float16, VideoLayoutKind.ChannelRows)]
    public void RoundTrip_RealKv_ErrorWithinHalfStep(int level, DType dtype, VideoLayoutKind layout)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 256, dtype);
        var codec = new VideoCodec(layout);
        var watch = Stopwatch.StartNew();
        var parameterWriter = new ArrayBufferWriter<byte>();
        var payloadWriter = new ArrayBufferWriter<byte>();
        codec.Encode(kv, shape, dtype, 0, level, parameterWriter, payloadWriter);
        double encodeSeconds = watch.Elapsed.TotalSeconds;
        byte[] parameters = parameterWriter.WrittenSpan.ToArray();
        byte[] payload = payloadWriter.WrittenSpan.ToArray();
        var decoded = new byte[kv.Length];
        watch.Restart();
        codec.Decode(parameters, payload, shape, dtype, 0, level, decoded);
        double decodeSeconds = watch.Elapsed.TotalSeconds;

        var original = new float[shape.Elements];
        var restored = new float[shape.Elements];
        FloatConversions.ToSingle(dtype, kv, original);
        FloatConversions.ToSingle(dtype, decoded, restored);
        float[] steps = Steps(parameters, shape);
        double worst = 0;
        for (long i = 0; i < original.Length; i++)
        {
            int channel = (int)(i % shape.Channels);
            int slab = (int)(i / ((long)shape.Tokens * shape.Channels));
            float step = steps[(slab * shape.Channels) + channel];
            // Half a step, plus the output type's own rounding of the reconstructed value.
            double magnitude = Math.Max(Math.Abs(original[i]), Math.Abs(restored[i]));
            double rounding = dtype == DType.Float32 ? 1e-6 * magnitude : magnitude / 256.0;
            double error = Math.Abs(original[i] - restored[i]);
            Assert.True(error <= (step / 2 * 1.0001) + rounding + 1e-7, $"element {i}: {original[i]} -> {restored[i]}, step {step}");
            worst = Math.Max(worst, step > 0 ? error / step : 0);
        }

        double fp16Bytes = shape.Elements * 2.0;
        double ratio = fp16Bytes / (parameters.Length + payload.Length);
        output.WriteLine($"video {layout} {level}-bit {dtype}: {shape}, parameters {parameters.Length} B, payload {payload.Length} B, {ratio:F2}x smaller than fp16, " +
            $"worst error {worst:F3} steps, encode {fp16Bytes / 1e6 / encodeSeconds:F1} MB/s, decode {fp16Bytes / 1e6 / decodeSeconds:F1} MB/s (fp16 MB)");
        // Up to 8 bits the streams come within 75% of the ideal 16/bits. 10- and 12-bit frames code the low, noise-like
        // bits of the KV almost verbatim (measured 1.17x and 0.88x on this KV): those levels buy accuracy, not size.
        double floor = level <= 8 ? 0.75 * 16 / level : 0.8;
        Assert.True(ratio > floor, $"ratio {ratio}: under {floor:F2}");
    }

    [Fact]
    public void EncodeDecode_Concurrently_SameBytesAsAlone()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(768, 256, DType.Float16);
        (byte[] parameters, byte[] payload) = Encode(kv, shape, DType.Float16, 4);
        var expected = new byte[kv.Length];
        s_codec.Decode(parameters, payload, shape, DType.Float16, 0, 4, expected);
        var results = new (byte[] Payload, byte[] Decoded)[4];
        Parallel.For(0, results.Length, i =>
        {
            (_, byte[] again) = Encode(kv, shape, DType.Float16, 4);
            var decoded = new byte[kv.Length];
            s_codec.Decode(parameters, again, shape, DType.Float16, 0, 4, decoded);
            results[i] = (again, decoded);
        });
        Assert.All(results, r =>
        {
            Assert.Equal(payload, r.Payload);
            Assert.Equal(expected, r.Decoded);
        });
    }

    [Theory]
    [InlineData(4, 5, 1, 6, VideoLayoutKind.TokenTiles)]
    [InlineData(3, 400, 1, 100, VideoLayoutKind.TokenTiles)]
    [InlineData(2, 150, 3, 50, VideoLayoutKind.ChannelRows)]
    public void RoundTrip_OddShapeWithConstantChannel_ErrorWithinHalfStep(int layers, int tokens, int heads, int headDim, VideoLayoutKind layout)
    {
        var shape = new KvShape(layers, tokens, heads, headDim);
        var codec = new VideoCodec(layout);
        var values = new float[shape.Elements];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = i % shape.Channels == 2 ? 0.3f : MathF.Sin(i * 0.7f) * (1 + (i % 3));
        }

        var kv = new byte[values.Length * 4];
        FloatConversions.FromSingle(DType.Float32, values, kv);
        var parameterWriter = new ArrayBufferWriter<byte>();
        var payloadWriter = new ArrayBufferWriter<byte>();
        codec.Encode(kv, shape, DType.Float32, 0, 8, parameterWriter, payloadWriter);
        byte[] parameters = parameterWriter.WrittenSpan.ToArray();
        byte[] payload = payloadWriter.WrittenSpan.ToArray();
        Assert.Equal(codec.QuantizedFrames(kv, shape, DType.Float32, 8, 1), codec.DecodedFrames(payload, shape, 8, 1));
        var decoded = new float[values.Length];
        codec.Decode(parameters, payload, shape, DType.Float32, 0, 8, System.Runtime.InteropServices.MemoryMarshal.AsBytes(decoded.AsSpan()));
        float[] steps = Steps(parameters, shape);
        for (int i = 0; i < values.Length; i++)
        {
            int slab = i / (shape.Tokens * shape.Channels);
            float step = steps[(slab * shape.Channels) + (i % shape.Channels)];
            Assert.True(Math.Abs(values[i] - decoded[i]) <= (step / 2 * 1.0001) + 1e-6, $"element {i}: {values[i]} -> {decoded[i]}");
        }
    }

    [Fact]
    public void Geometry_BundledAndLargeShapes_WithinNvdecLimits()
    {
        Assert.Equal((144, 144, 6), s_codec.Geometry(new KvShape(8, 256, 2, 64)));
        Assert.Equal((160, 160, 11 * 11), s_codec.Geometry(new KvShape(32, 256, 8, 128)));
        Assert.Throws<ArgumentException>(() => s_codec.Geometry(new KvShape(1, 1, 1, 16411)));
        var rows = new VideoCodec(VideoLayoutKind.ChannelRows);
        Assert.Equal((256, 144, 3), rows.Geometry(new KvShape(8, 256, 2, 64)));
        Assert.Equal((8192, 1024, 2 * 11), rows.Geometry(new KvShape(32, 10000, 8, 128)));
    }

    [Fact]
    public void Decode_ChunkOfOtherLayout_DecodedByAnyInstance_UnknownLayoutRefused()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 256, DType.Float16);
        var rows = new VideoCodec(VideoLayoutKind.ChannelRows);
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        rows.Encode(kv, shape, DType.Float16, 0, 4, parameters, payload);
        var viaRows = new byte[kv.Length];
        var viaDefault = new byte[kv.Length];
        rows.Decode(parameters.WrittenSpan, payload.WrittenSpan, shape, DType.Float16, 0, 4, viaRows);
        VideoCodec.Instance.Decode(parameters.WrittenSpan, payload.WrittenSpan, shape, DType.Float16, 0, 4, viaDefault);
        Assert.Equal(viaRows, viaDefault);

        byte[] unknown = parameters.WrittenSpan.ToArray();
        unknown[3] = 9;
        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() => VideoCodec.Instance.Decode(unknown, payload.WrittenSpan, shape, DType.Float16, 0, 4, viaDefault));
        Assert.Contains("layout id", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Decode_TruncatedPayload_ThrowsInvalidKvData()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 256, DType.Float16);
        (byte[] parameters, byte[] payload) = Encode(kv, shape, DType.Float16, 8);
        var destination = new byte[kv.Length];
        foreach (int length in new[] { 0, 5, 12, 100, payload.Length / 2, payload.Length - 1 })
        {
            Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(parameters, payload.AsSpan(0, length), shape, DType.Float16, 0, 8, destination));
        }

        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(parameters, [.. payload, 0], shape, DType.Float16, 0, 8, destination));
        Assert.Contains("after the V stream", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Decode_RandomlyCorruptedPayload_ThrowsInvalidKvData()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(512, 256, DType.Float16);
        (byte[] parameters, byte[] payload) = Encode(kv, shape, DType.Float16, 6);
        var destination = new byte[kv.Length];
        var random = new Random(1234);
        for (int i = 0; i < 150; i++)
        {
            byte[] corrupt = [.. payload];
            int flips = 1 + random.Next(4);
            for (int f = 0; f < flips; f++)
            {
                corrupt[random.Next(corrupt.Length)] ^= (byte)(1 << random.Next(8));
            }

            Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(parameters, corrupt, shape, DType.Float16, 0, 6, destination));
        }
    }

    [Fact]
    public void Decode_GarbageStream_ThrowsInvalidKvDataNamingStream()
    {
        var shape = new KvShape(2, 4, 1, 8);
        (byte[] parameters, byte[] payload) = Encode(new byte[shape.Elements * 2], shape, DType.Float16, 8);
        byte[] garbage = new byte[payload.Length];
        new Random(7).NextBytes(garbage);
        BinaryPrimitives.WriteUInt32LittleEndian(garbage, (uint)(garbage.Length - 24));
        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(parameters, garbage, shape, DType.Float16, 0, 8, new byte[shape.Elements * 2]));
        Assert.Contains("K HEVC stream", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Decode_BadParameters_ThrowsInvalidKvDataNamingField()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 256, DType.Float16);
        (byte[] parameters, byte[] payload) = Encode(kv, shape, DType.Float16, 8);
        var destination = new byte[kv.Length];

        InvalidKvDataException level = Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(parameters, payload, shape, DType.Float16, 0, 6, destination));
        Assert.Contains("bits", level.Message, StringComparison.Ordinal);

        byte[] width = [.. parameters];
        width[4] ^= 1;
        Assert.Contains("frame width", Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(width, payload, shape, DType.Float16, 0, 8, destination)).Message, StringComparison.Ordinal);

        byte[] step = [.. parameters];
        BinaryPrimitives.WriteHalfLittleEndian(step.AsSpan(step.Length - 2), Half.NaN);
        Assert.Contains("step", Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(step, payload, shape, DType.Float16, 0, 8, destination)).Message, StringComparison.Ordinal);

        Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(parameters.AsSpan(0, parameters.Length - 1), payload, shape, DType.Float16, 0, 8, destination));
        Assert.Throws<InvalidKvDataException>(() => s_codec.Decode(parameters, payload, shape, DType.Float16, 0, 5, destination));
    }

    [Fact]
    public void Load_MissingLibrary_ExplainsPackagesAndBuild()
    {
        DllNotFoundException ex = Assert.Throws<DllNotFoundException>(() => KvfVideoLibrary.Load([Path.Combine(Path.GetTempPath(), "kvf-none", "libkvfvideo.so")]));
        Assert.Contains("libx265-dev libavcodec-dev", ex.Message, StringComparison.Ordinal);
        Assert.Contains("make -C native/kvfvideo", ex.Message, StringComparison.Ordinal);
        Assert.Contains("kvf-none", ex.Message, StringComparison.Ordinal);
    }

    private static (byte[] Parameters, byte[] Payload) Encode(byte[] kv, KvShape shape, DType dtype, int level)
    {
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        s_codec.Encode(kv, shape, dtype, 0, level, parameters, payload);
        return (parameters.WrittenSpan.ToArray(), payload.WrittenSpan.ToArray());
    }

    /// <summary>The per (layer, kind, channel) steps from the documented parameter format.</summary>
    private static float[] Steps(byte[] parameters, KvShape shape)
    {
        int count = shape.Layers * 2 * shape.Channels;
        bool fp16 = parameters[2] == 0;
        int size = fp16 ? 2 : 4;
        var steps = new float[count];
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> at = parameters.AsSpan(16 + (size * (count + i)));
            steps[i] = fp16 ? (float)BinaryPrimitives.ReadHalfLittleEndian(at) : BinaryPrimitives.ReadSingleLittleEndian(at);
        }

        return steps;
    }
}
