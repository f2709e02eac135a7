using System.Buffers;
using System.Diagnostics;
using KvFetcher.Codecs.Exact;
using KvFetcher.Core;

namespace KvFetcher.Codecs.Tests.Exact;

public class ExactCodecTests
{
    [Theory]
    [InlineData(DType.Float16, 0)]
    [InlineData(DType.Float16, 512)]
    [InlineData(DType.BFloat16, 0)]
    [InlineData(DType.BFloat16, 768)]
    [InlineData(DType.Float32, 256)]
    public void RoundTrip_RealKv_BitIdentical(DType dtype, int start)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(start, 256, dtype);
        (byte[] parameters, byte[] payload) = Encode(kv, shape, dtype);
        Assert.Empty(parameters);
        Assert.Equal(kv, Decode(payload, shape, dtype));
    }

    [Theory]
    [InlineData(DType.Float16, 1)]
    [InlineData(DType.Float16, 3)]
    [InlineData(DType.BFloat16, 255)]
    [InlineData(DType.Float32, 3)]
    public void RoundTrip_OddTokenCounts_BitIdentical(DType dtype, int tokens)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(100, tokens, dtype);
        (_, byte[] payload) = Encode(kv, shape, dtype);
        Assert.Equal(kv, Decode(payload, shape, dtype));
    }

    [Theory]
    [InlineData(DType.Float16)]
    [InlineData(DType.BFloat16)]
    public void Encode_RealKv_SmallerThanFp16(DType dtype)
    {
        long fp16Bytes = 0;
        long coded = 0;
        for (int start = 0; start + 256 <= 1024; start += 256)
        {
            (byte[] kv, KvShape shape) = RealKv.Chunk(start, 256, dtype);
            fp16Bytes += shape.Elements * 2;
            coded += Encode(kv, shape, dtype).Payload.Length;
        }

        double ratio = (double)fp16Bytes / coded;
        TestContext.Current.TestOutputHelper?.WriteLine($"exact {dtype.ToShortName()}: {fp16Bytes} fp16 bytes -> {coded} bytes, {ratio:F3}x");

        // Measured: fp16 about 1.19x (the 10 mantissa bits are incompressible noise), bf16 about 1.5x.
        Assert.True(ratio > (dtype == DType.BFloat16 ? 1.4 : 1.12), $"ratio {ratio:F3}");
    }

    public static TheoryData<string, DType> Synthetic
    {
        get
        {
            var data = new TheoryData<string, DType>();
            foreach (string kind in new[] { "zeros", "same", "random", "special", "ramp" })
            {
                foreach (DType dtype in new[] { DType.Float16, DType.BFloat16, DType.Float32 })
                {
                    data.Add(kind, dtype);
                }
            }

            return data;
        }
    }

    [Theory]
    [MemberData(nameof(Synthetic))]
    public void RoundTrip_SyntheticPatterns_BitIdentical(string kind, DType dtype)
    {
        var shape = new KvShape(2, 37, 2, 16);
        byte[] kv = MakeSynthetic(kind, shape, dtype);
        (_, byte[] payload) = Encode(kv, shape, dtype);
        Assert.Equal(kv, Decode(payload, shape, dtype));
        if (kind is "zeros" or "same")
        {
            Assert.True(payload.Length < 64, $"a constant chunk took {payload.Length} bytes");
        }

        if (kind == "random")
        {
            Assert.True(payload.Length <= kv.Length + 2 + (shape.Layers * 2 * (1 + dtype.SizeOf())), "random data must fall back to raw planes");
        }
    }

    [Theory]
    [InlineData(DType.Float16, "xor", 1)]
    [InlineData(DType.Float16, "sub", 2)]
    [InlineData(DType.BFloat16, "xor", 1)]
    [InlineData(DType.Float32, "xor", 1)]
    [InlineData(DType.Float32, "sub", 2)]
    public void Encode_TokenCorrelatedValues_PicksPredictorAndRoundTrips(DType dtype, string kind, int expectedPredictor)
    {
        var shape = new KvShape(2, 64, 2, 32);
        int size = dtype.SizeOf();
        var bytes = new byte[shape.Elements * size];
        var random = new Random(5);
        var bases = new uint[shape.Channels];
        for (int c = 0; c < bases.Length; c++)
        {
            bases[c] = (uint)random.Next() & 0x7FFF7FFF;
        }

        int values = bytes.Length / size;
        for (int i = 0; i < values; i++)
        {
            int token = i / shape.Channels % shape.Tokens;
            uint value = kind == "xor" ? bases[i % shape.Channels] ^ (uint)random.Next(2) : bases[i % shape.Channels] + (uint)(token * 3);
            for (int b = 0; b < size; b++)
            {
                bytes[(i * size) + b] = (byte)(value >> (8 * b));
            }
        }

        (_, byte[] payload) = Encode(bytes, shape, dtype);
        Assert.Equal(expectedPredictor, payload[2]);
        Assert.True(payload.Length < bytes.Length / 4, $"{payload.Length} of {bytes.Length} bytes");
        Assert.Equal(bytes, Decode(payload, shape, dtype));
    }

    [Fact]
    public void Decode_EveryTruncation_ThrowsInvalidKvData()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(10, 3, DType.Float16);
        (_, byte[] payload) = Encode(kv, shape, DType.Float16);
        var destination = new byte[kv.Length];
        for (int length = 0; length < payload.Length; length++)
        {
            byte[] truncated = payload[..length];
            Assert.Throws<InvalidKvDataException>(() => ExactCodec.Instance.Decode([], truncated, shape, DType.Float16, 0, 0, destination));
        }
    }

    [Theory]
    [InlineData(DType.Float16)]
    [InlineData(DType.BFloat16)]
    public void Decode_RandomMutations_ThrowOnlyInvalidKvData(DType dtype)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(40, 8, dtype);
        (_, byte[] payload) = Encode(kv, shape, dtype);
        var random = new Random(11);
        var destination = new byte[kv.Length];
        int detected = 0;
        const int Trials = 2000;
        for (int trial = 0; trial < Trials; trial++)
        {
            byte[] mutated = (byte[])payload.Clone();
            int at = random.Next(mutated.Length);
            switch (trial % 3)
            {
                case 0:
                    mutated[at] ^= (byte)(1 << random.Next(8));
                    break;
                case 1:
                    mutated[at] = (byte)random.Next(256);
                    break;
                default:
                    mutated = [.. mutated.AsSpan(0, at), .. mutated.AsSpan(at + 1)];
                    break;
            }

            try
            {
                ExactCodec.Instance.Decode([], mutated, shape, dtype, 0, 0, destination);
            }
            catch (InvalidKvDataException)
            {
                detected++;
            }
        }

        // Flips inside raw planes decode to other values by design (the container checksum catches those).
        Assert.True(detected > Trials / 10, $"only {detected} of {Trials} mutations were detected");
    }

    [Fact]
    public void Decode_CorruptRansTable_NamesLayerAndPlane()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 256, DType.Float16);
        (_, byte[] payload) = Encode(kv, shape, DType.Float16);
        int n = shape.Tokens * shape.Channels;

        // Layer 0 K: predictor at 2, the low plane raw (method at 3, n bytes), the high plane rANS (method at 4 + n).
        Assert.Equal(0, payload[3]);
        Assert.Equal(2, payload[4 + n]);
        payload[5 + n] = 99;
        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() => ExactCodec.Instance.Decode([], payload, shape, DType.Float16, 0, 0, new byte[kv.Length]));
        Assert.Contains("layer 0 K byte plane 1", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"scale bits out of range at payload offset {5 + n}", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void EncodeDecode_WarmedUp_AllocateNoChunkBuffers()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 256, DType.BFloat16);
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>(kv.Length * 2);
        var destination = new byte[kv.Length];
        long encodeBytes = 0;
        long decodeBytes = 0;
        using (new KvFetcher.Tests.NoGcRegion())
        {
            for (int round = 0; round < 3; round++)
            {
                payload.ResetWrittenCount();
                long before = GC.GetAllocatedBytesForCurrentThread();
                ExactCodec.Instance.Encode(kv, shape, DType.BFloat16, 0, 0, parameters, payload);
                long middle = GC.GetAllocatedBytesForCurrentThread();
                ExactCodec.Instance.Decode([], payload.WrittenSpan, shape, DType.BFloat16, 0, 0, destination);
                encodeBytes = middle - before;
                decodeBytes = GC.GetAllocatedBytesForCurrentThread() - middle;
            }
        }

        Assert.Equal(kv, destination);
        Assert.True(encodeBytes < 1024, $"encode allocated {encodeBytes} bytes");
        Assert.True(decodeBytes < 1024, $"decode allocated {decodeBytes} bytes");
    }

    [Fact]
    public void Decode_NonEmptyParameters_Throws()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 1, DType.Float16);
        (_, byte[] payload) = Encode(kv, shape, DType.Float16);
        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() => ExactCodec.Instance.Decode([1], payload, shape, DType.Float16, 0, 0, new byte[kv.Length]));
        Assert.Contains("parameters must be empty", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Decode_OtherDType_Throws()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 2, DType.Float16);
        (_, byte[] payload) = Encode(kv, shape, DType.Float16);
        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() => ExactCodec.Instance.Decode([], payload, shape, DType.Float32, 0, 0, new byte[kv.Length * 2]));
        Assert.Contains("element size 2 at payload offset 1", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Decode_TrailingBytes_Throws()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 2, DType.BFloat16);
        (_, byte[] payload) = Encode(kv, shape, DType.BFloat16);
        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() => ExactCodec.Instance.Decode([], [.. payload, 0], shape, DType.BFloat16, 0, 0, new byte[kv.Length]));
        Assert.Contains("1 trailing bytes", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Decode_UnknownLevel_Throws()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 1, DType.Float16);
        (_, byte[] payload) = Encode(kv, shape, DType.Float16);
        Assert.Throws<InvalidKvDataException>(() => ExactCodec.Instance.Decode([], payload, shape, DType.Float16, 0, 1, new byte[kv.Length]));
    }

    [Fact]
    public void Codec_Identity_MatchesContract()
    {
        Assert.Equal(CodecId.Exact, ExactCodec.Instance.Id);
        Assert.Equal("exact", ExactCodec.Instance.Name);
        Assert.Equal([0], ExactCodec.Instance.Levels);
        Assert.True(ExactCodec.Instance.IsLossless(0));
    }

    [Theory]
    [InlineData(DType.Float16)]
    [InlineData(DType.BFloat16)]
    public void Throughput_RealKv_Reported(DType dtype)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(256, 256, dtype);
        (_, byte[] payload) = Encode(kv, shape, dtype);
        var destination = new byte[kv.Length];
        var writer = new ArrayBufferWriter<byte>(kv.Length);
        var parameters = new ArrayBufferWriter<byte>();
        const int Rounds = 10;
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < Rounds; i++)
        {
            writer.ResetWrittenCount();
            ExactCodec.Instance.Encode(kv, shape, dtype, 0, 0, parameters, writer);
        }

        double encodeSeconds = watch.Elapsed.TotalSeconds / Rounds;
        watch.Restart();
        for (int i = 0; i < Rounds; i++)
        {
            ExactCodec.Instance.Decode([], payload, shape, dtype, 0, 0, destination);
        }

        double decodeSeconds = watch.Elapsed.TotalSeconds / Rounds;
        Assert.Equal(kv, destination);
        TestContext.Current.TestOutputHelper?.WriteLine(
            $"exact {dtype.ToShortName()}: encode {kv.Length / encodeSeconds / 1e6:F0} MB/s, decode {kv.Length / decodeSeconds / 1e6:F0} MB/s (single thread, this build)");
    }

    private static (byte[] Parameters, byte[] Payload) Encode(byte[] kv, KvShape shape, DType dtype)
    {
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        ExactCodec.Instance.Encode(kv, shape, dtype, 0, 0, parameters, payload);
        return (parameters.WrittenSpan.ToArray(), payload.WrittenSpan.ToArray());
    }

    private static byte[] Decode(byte[] payload, KvShape shape, DType dtype)
    {
        var destination = new byte[shape.Elements * dtype.SizeOf()];
        ExactCodec.Instance.Decode([], payload, shape, dtype, 0, 0, destination);
        return destination;
    }

    private static byte[] MakeSynthetic(string kind, KvShape shape, DType dtype)
    {
        int size = dtype.SizeOf();
        var bytes = new byte[shape.Elements * size];
        var random = new Random(kind.Length);
        ushort[] special16 = dtype == DType.Float16
            ? [0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFFFF, 0x0001, 0x03FF, 0x8001, 0x0000, 0x8000]
            : [0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFFF, 0x0001, 0x007F, 0x8001, 0x0000, 0x8000];
        uint[] special32 = [0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF, 0x00000001, 0x007FFFFF, 0x80000001, 0, 0x80000000];
        for (long i = 0; i < shape.Elements; i++)
        {
            uint value = kind switch
            {
                "zeros" => 0,
                "same" => size == 2 ? 0x3C00u : 0x3F800000u,
                "random" => (uint)random.Next() ^ ((uint)random.Next() << 16),
                "special" => size == 2 ? special16[random.Next(special16.Length)] : special32[random.Next(special32.Length)],
                _ => (uint)(i * 3),
            };
            for (int b = 0; b < size; b++)
            {
                bytes[(i * size) + b] = (byte)(value >> (8 * b));
            }
        }

        return bytes;
    }
}
