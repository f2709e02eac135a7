using System.Buffers;
using KvFetcher.Codecs.Transform;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Core.Numerics;

namespace KvFetcher.Codecs.Tests.Transform;

public class TransformCodecTests
{
    private static (byte[] Parameters, byte[] Payload) Encode(TransformCodec codec, byte[] kv, KvShape shape, DType dtype, long tokenStart, int level)
    {
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        codec.Encode(kv, shape, dtype, tokenStart, level, parameters, payload);
        return (parameters.WrittenSpan.ToArray(), payload.WrittenSpan.ToArray());
    }

    private static float[] Floats(byte[] bytes, DType dtype)
    {
        var values = new float[bytes.Length / dtype.SizeOf()];
        FloatConversions.ToSingle(dtype, bytes, values);
        return values;
    }

    /// <summary>Squared error of the coded tokens over their variance around each channel's mean, pooled over planes.</summary>
    private static double RelativeError(float[] original, float[] decoded, KvShape shape, int fromToken)
    {
        int c = shape.Channels;
        double error = 0, variance = 0;
        for (int p = 0; p < shape.Layers * 2; p++)
        {
            var mean = new double[c];
            for (int t = fromToken; t < shape.Tokens; t++)
            {
                for (int j = 0; j < c; j++)
                {
                    mean[j] += original[(((p * shape.Tokens) + t) * c) + j] / (double)(shape.Tokens - fromToken);
                }
            }

            for (int t = fromToken; t < shape.Tokens; t++)
            {
                for (int j = 0; j < c; j++)
                {
                    int i = (((p * shape.Tokens) + t) * c) + j;
                    error += Math.Pow(original[i] - decoded[i], 2);
                    variance += Math.Pow(original[i] - mean[j], 2);
                }
            }
        }

        return error / variance;
    }

    [Theory]
    [InlineData(0, DType.Float16)]
    [InlineData(1, DType.BFloat16)]
    [InlineData(3, DType.Float32)]
    public void EncodeDecode_HeldOutRealKv_ErrorWithinTheLevelsModelAndSmallerThanRaw(int level, DType dtype)
    {
        KvtcTransform transform = KvtcTestTransforms.ForRealKv;
        var codec = new TransformCodec(transform);
        (byte[] kv, KvShape shape) = RealKv.Chunk(KvtcTestTransforms.FitTokens, 128, dtype);
        (byte[] parameters, byte[] payload) = Encode(codec, kv, shape, dtype, KvtcTestTransforms.FitTokens, level);
        var decoded = new byte[kv.Length];
        codec.Decode(parameters, payload, shape, dtype, KvtcTestTransforms.FitTokens, level, decoded);

        // Held-out tokens (not fitted): the error stays within a few times what the allocation models, and far below the signal.
        double relative = RelativeError(Floats(kv, dtype), Floats(decoded, dtype), shape, transform.ExactHead);
        double modelled = 1 - transform.KeptVariance(level);
        Assert.True(relative < Math.Max(4 * modelled, 0.02) && relative < 0.5, $"level {level}: relative squared error {relative:F4}, modelled {modelled:F4}");
        double fp16Bytes = shape.Elements * 2;
        Assert.True(payload.Length + parameters.Length < fp16Bytes / 2, $"level {level}: {payload.Length + parameters.Length} bytes for {fp16Bytes} of fp16");
    }

    [Fact]
    public void EncodeDecode_LowerLevel_FewerBytesAndMoreError()
    {
        var codec = new TransformCodec(KvtcTestTransforms.ForRealKv);
        (byte[] kv, KvShape shape) = RealKv.Chunk(KvtcTestTransforms.FitTokens, 128, DType.Float16);
        long previousBytes = long.MaxValue;
        double previousError = -1;
        foreach (int level in codec.Levels)
        {
            (byte[] parameters, byte[] payload) = Encode(codec, kv, shape, DType.Float16, KvtcTestTransforms.FitTokens, level);
            var decoded = new byte[kv.Length];
            codec.Decode(parameters, payload, shape, DType.Float16, KvtcTestTransforms.FitTokens, level, decoded);
            double error = RelativeError(Floats(kv, DType.Float16), Floats(decoded, DType.Float16), shape, 4);
            Assert.True(payload.Length < previousBytes, $"level {level}: {payload.Length} bytes, previous {previousBytes}");
            Assert.True(error > previousError, $"level {level}: error {error}, previous {previousError}");
            previousBytes = payload.Length;
            previousError = error;
        }
    }

    [Fact]
    public void EncodeDecode_SinkAndRecentTokens_BitIdentical()
    {
        KvtcTransform transform = KvtcTestTransforms.Fit(exactTail: 8, KvtcTestTransforms.Model(2));
        var codec = new TransformCodec(transform);
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 64, DType.Float16);
        (byte[] parameters, byte[] payload) = Encode(codec, kv, shape, DType.Float16, 0, 3);
        var decoded = new byte[kv.Length];
        codec.Decode(parameters, payload, shape, DType.Float16, 0, 3, decoded);

        int rowBytes = shape.Channels * 2;
        int differing = 0;
        for (int p = 0; p < shape.Layers * 2; p++)
        {
            int plane = p * shape.Tokens * rowBytes;
            Assert.Equal(kv.AsSpan(plane, 4 * rowBytes), decoded.AsSpan(plane, 4 * rowBytes));
            int tail = plane + ((shape.Tokens - 8) * rowBytes);
            Assert.Equal(kv.AsSpan(tail, 8 * rowBytes), decoded.AsSpan(tail, 8 * rowBytes));
            differing += kv.AsSpan(plane + (4 * rowBytes), (shape.Tokens - 12) * rowBytes).SequenceEqual(decoded.AsSpan(plane + (4 * rowBytes), (shape.Tokens - 12) * rowBytes)) ? 0 : 1;
        }

        Assert.Equal(shape.Layers * 2, differing);
    }

    [Fact]
    public void Decode_ChunkOfAnotherTransform_InvalidKvData()
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(KvtcTestTransforms.FitTokens, 32, DType.Float16);
        (byte[] parameters, byte[] payload) = Encode(new TransformCodec(KvtcTestTransforms.ForRealKv), kv, shape, DType.Float16, KvtcTestTransforms.FitTokens, 1);
        var other = new TransformCodec(KvtcTestTransforms.Fit(exactTail: 0, KvtcTestTransforms.Model(3)));

        var ex = Assert.Throws<InvalidKvDataException>(() => other.Decode(parameters, payload, shape, DType.Float16, KvtcTestTransforms.FitTokens, 1, new byte[kv.Length]));
        Assert.Contains("transform", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Decode_TransformNotLoaded_InvalidKvData()
    {
        KvtcTransform unloaded = KvtcTestTransforms.Fit(exactTail: 0, KvtcTestTransforms.Model(4));
        (byte[] kv, KvShape shape) = RealKv.Chunk(KvtcTestTransforms.FitTokens, 32, DType.Float16);
        (byte[] parameters, byte[] payload) = Encode(new TransformCodec(unloaded), kv, shape, DType.Float16, KvtcTestTransforms.FitTokens, 2);

        var ex = Assert.Throws<InvalidKvDataException>(() => TransformCodec.Instance.Decode(parameters, payload, shape, DType.Float16, KvtcTestTransforms.FitTokens, 2, new byte[kv.Length]));
        Assert.Contains("not loaded", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TryLoadFrom_TransformOfAnotherModel_RefusedAsStale()
    {
        string directory = Directory.CreateTempSubdirectory("kvtc-").FullName;
        try
        {
            KvtcTransform transform = KvtcTestTransforms.ForRealKv;
            transform.Save(KvtcTransform.PathIn(directory));

            KvtcTransform? loaded = KvtcTransform.TryLoadFrom(directory, transform.Model, out string? problem);
            Assert.Null(problem);
            Assert.Equal(transform.IdText, loaded!.IdText);

            Assert.Null(KvtcTransform.TryLoadFrom(directory, KvtcTestTransforms.Model(99), out problem));
            Assert.Contains("stale", problem, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void Read_CorruptTransformFile_InvalidData()
    {
        byte[] file = KvtcTestTransforms.ForRealKv.Write();
        var random = new Random(5);
        for (int i = 0; i < 50; i++)
        {
            byte[] mutated = (byte[])file.Clone();
            mutated[random.Next(mutated.Length)] ^= (byte)(1 << random.Next(8));
            Assert.Throws<InvalidDataException>(() => KvtcTransform.Read(mutated));
        }

        Assert.Throws<InvalidDataException>(() => KvtcTransform.Read(file.AsSpan(0, file.Length - 1)));
        Assert.Throws<InvalidDataException>(() => KvtcTransform.Read(file.AsSpan(0, 10)));
    }

    [Fact]
    public void Decode_TruncatedOrGarbledChunk_OnlyInvalidKvData()
    {
        var codec = new TransformCodec(KvtcTestTransforms.ForRealKv);
        (byte[] kv, KvShape shape) = RealKv.Chunk(KvtcTestTransforms.FitTokens, 16, DType.Float16);
        (byte[] parameters, byte[] payload) = Encode(codec, kv, shape, DType.Float16, KvtcTestTransforms.FitTokens, 2);
        var destination = new byte[kv.Length];
        var random = new Random(11);
        int refused = 0;
        for (int i = 0; i < 1500; i++)
        {
            byte[] p = (byte[])parameters.Clone();
            byte[] q = (byte[])payload.Clone();
            switch (i % 4)
            {
                case 0:
                    q = q[..random.Next(q.Length)];
                    break;
                case 1:
                    q[random.Next(q.Length)] ^= (byte)(1 << random.Next(8));
                    break;
                case 2:
                    p[random.Next(p.Length)] = (byte)random.Next(256);
                    break;
                default:
                    q.AsSpan(random.Next(q.Length)).Slice(0, 1).Fill((byte)random.Next(256));
                    q = [.. q, .. new byte[random.Next(1, 4)]];
                    break;
            }

            try
            {
                codec.Decode(p, q, shape, DType.Float16, KvtcTestTransforms.FitTokens, 2, destination);
            }
            catch (InvalidKvDataException)
            {
                refused++;
            }
        }

        Assert.True(refused > 1000, $"{refused} of 1500 corruptions refused");
    }

    [Fact]
    public void GetMaxEncodedLength_NoiseInput_BoundsWhatEncodeWrites()
    {
        KvtcTransform transform = KvtcTestTransforms.ForRealKv;
        var codec = new TransformCodec(transform);
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 32, DType.Float32);
        var random = new Random(3);
        float[] noise = [.. Enumerable.Range(0, (int)shape.Elements).Select(_ => (float)((random.NextDouble() - 0.5) * 2000))];
        Buffer.BlockCopy(noise, 0, kv, 0, kv.Length);
        foreach (int level in codec.Levels)
        {
            (byte[] parameters, byte[] payload) = Encode(codec, kv, shape, DType.Float32, 0, level);
            Assert.True(parameters.Length + payload.Length <= codec.GetMaxEncodedLength(shape, DType.Float32, level));
            codec.Decode(parameters, payload, shape, DType.Float32, 0, level, new byte[kv.Length]);
        }
    }

    [Fact]
    public void KvCodecs_Registry_ListsKvtcWithItsLevels()
    {
        Assert.Contains(KvCodecs.All, c => c.Id == CodecId.Kvtc && c.Name == "kvtc");
        (IKvCodec codec, int level) = KvCodecs.ParseVariant("kvtc2");
        Assert.Same(TransformCodec.Instance, codec);
        Assert.Equal(2, level);
        Assert.Equal("kvtc0", KvCodecs.VariantName(CodecId.Kvtc, 0));
        Assert.False(codec.IsLossless(0));
    }

    [Fact]
    public void Instance_RegisteredTransform_RoundTripsThroughAContainer()
    {
        _ = KvtcTestTransforms.ForRealKv;
        (byte[] container, ChunkExpectation expected, byte[] kv) = Containers.ChunkContainerTests.Build(TransformCodec.Instance, 1, tokens: 32);
        var decoded = new byte[kv.Length];
        ChunkHeader header = TransformCodec.Instance.DecodeContainer(container, expected, decoded);
        Assert.Equal(CodecId.Kvtc, header.Codec);
        Assert.Equal(kv.AsSpan(0, 4 * expected.Shape.Channels * 2), decoded.AsSpan(0, 4 * expected.Shape.Channels * 2));
    }

    /// <summary>Squared error of the coded tokens of the K planes (or the V planes) over the original's energy.</summary>
    private static double KindError(float[] original, float[] decoded, KvShape shape, int kind, int fromToken)
    {
        int c = shape.Channels;
        double error = 0, energy = 0;
        for (int p = kind; p < shape.Layers * 2; p += 2)
        {
            for (int t = fromToken; t < shape.Tokens; t++)
            {
                for (int j = 0; j < c; j++)
                {
                    int i = (((p * shape.Tokens) + t) * c) + j;
                    error += Math.Pow(original[i] - decoded[i], 2);
                    energy += Math.Pow(original[i], 2);
                }
            }
        }

        return error / energy;
    }

    [Fact]
    public void Decode_WrongTokenStart_KeysWrongValuesAndExactTokensUnchanged()
    {
        var codec = new TransformCodec(KvtcTestTransforms.ForRealKv);
        const int start = KvtcTestTransforms.FitTokens;
        (byte[] kv, KvShape shape) = RealKv.Chunk(start, 64, DType.Float32);
        (byte[] parameters, byte[] payload) = Encode(codec, kv, shape, DType.Float32, start, 1);
        var right = new byte[kv.Length];
        var shifted = new byte[kv.Length];
        codec.Decode(parameters, payload, shape, DType.Float32, start, 1, right);
        codec.Decode(parameters, payload, shape, DType.Float32, start + 1, 1, shifted);

        float[] original = Floats(kv, DType.Float32);
        float[] good = Floats(right, DType.Float32);
        float[] bad = Floats(shifted, DType.Float32);
        double keyError = KindError(original, good, shape, 0, 4);
        double wrongKeyError = KindError(original, bad, shape, 0, 4);
        Assert.True(wrongKeyError > 20 * keyError, $"keys decoded one position off: relative error {wrongKeyError:E2}; at the right position {keyError:E2}");
        Assert.Equal(KindError(original, good, shape, 1, 4), KindError(original, bad, shape, 1, 4)); // values carry no position
        int rowBytes = shape.Channels * 4;
        for (int p = 0; p < shape.Layers * 2; p++)
        {
            int plane = p * shape.Tokens * rowBytes;
            Assert.Equal(kv.AsSpan(plane, 4 * rowBytes), shifted.AsSpan(plane, 4 * rowBytes));
        }
    }

    [Fact]
    public void EncodeDecode_KeysBeforeRope_LessKeyErrorThanKeysAsStored()
    {
        KvtcTransform preRope = KvtcTestTransforms.ForRealKv;
        KvtcTransform asStored = KvtcTestTransforms.Fit(exactTail: 0, KvtcTestTransforms.Model(5), keyRotation: KvtcKeyRotation.None);
        const int start = KvtcTestTransforms.FitTokens;
        (byte[] kv, KvShape shape) = RealKv.Chunk(start, 256, DType.Float32);
        float[] original = Floats(kv, DType.Float32);
        double KeyError(KvtcTransform transform)
        {
            var codec = new TransformCodec(transform);
            (byte[] parameters, byte[] payload) = Encode(codec, kv, shape, DType.Float32, start, 3);
            var decoded = new byte[kv.Length];
            codec.Decode(parameters, payload, shape, DType.Float32, start, 3, decoded);
            return KindError(original, Floats(decoded, DType.Float32), shape, 0, 4);
        }

        double pre = KeyError(preRope), stored = KeyError(asStored);
        Assert.True(pre < stored, $"keys before RoPE: relative error {pre:E3}; as stored {stored:E3}");
    }

    [Fact]
    public void Read_VersionOneFile_RefusedAsKeysAfterRope()
    {
        byte[] file = KvtcTestTransforms.ForRealKv.Write();
        file[4] = 1;
        Rehash(file);

        var ex = Assert.Throws<InvalidDataException>(() => KvtcTransform.Read(file));
        Assert.Contains("format version 1", ex.Message, StringComparison.Ordinal);
        Assert.Contains("calibrate", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_VersionTwoFile_RefusedWithRecalibrate()
    {
        byte[] file = KvtcTestTransforms.ForRealKv.Write();
        file[4] = 2;
        Rehash(file);

        var ex = Assert.Throws<InvalidDataException>(() => KvtcTransform.Read(file));
        Assert.Contains("format version 2", ex.Message, StringComparison.Ordinal);
        Assert.Contains("recalibrate", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_GroupOfZeroLayers_Refused()
    {
        byte[] file = KvtcTestTransforms.ForRealKv.Write();
        file[50] = 0;
        file[51] = 0;
        Rehash(file);

        Assert.Contains("offset 50", Assert.Throws<InvalidDataException>(() => KvtcTransform.Read(file)).Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(3)] // 32 layers: ten groups of 3 and a last one of 2
    [InlineData(5)] // six of 5 and one of 2
    public void EncodeDecode_GroupsNotDividingTheLayers_RoundTripsAndReadsBack(int groupLayers)
    {
        KvtcTransform transform = KvtcTestTransforms.Fit(exactTail: 0, KvtcTestTransforms.Model(50 + (ulong)groupLayers), groupLayers: groupLayers);
        int layers = transform.Layers;
        Assert.Equal(groupLayers, transform.GroupLayers);
        Assert.Equal(((layers + groupLayers - 1) / groupLayers) * 2, transform.Blocks);
        Assert.Equal((layers % groupLayers) * transform.Channels, transform.BlockChannels(transform.Blocks - 1));
        Assert.Equal(layers - (layers % groupLayers), transform.BlockFirstLayer(transform.Blocks - 1));

        KvtcTransform read = KvtcTransform.Read(transform.Write());
        Assert.Equal(transform.IdText, read.IdText);
        Assert.Equal(groupLayers, read.GroupLayers);

        (byte[] kv, KvShape shape) = RealKv.Chunk(KvtcTestTransforms.FitTokens, 64, DType.Float16);
        (byte[] parameters, byte[] payload) = Encode(new TransformCodec(transform), kv, shape, DType.Float16, KvtcTestTransforms.FitTokens, 1);
        var decoded = new byte[kv.Length];
        new TransformCodec(read).Decode(parameters, payload, shape, DType.Float16, KvtcTestTransforms.FitTokens, 1, decoded);
        double relative = RelativeError(Floats(kv, DType.Float16), Floats(decoded, DType.Float16), shape, transform.ExactHead);
        Assert.True(relative < 0.1, $"groups of {groupLayers}: relative squared error {relative:F4}");

        // Every layer is restored, the last group's included: no plane comes back as its mean alone.
        float[] original = Floats(kv, DType.Float16), restored = Floats(decoded, DType.Float16);
        int c = shape.Channels;
        for (int p = 0; p < shape.Layers * 2; p++)
        {
            double error = 0, energy = 0;
            for (int i = ((p * shape.Tokens) + transform.ExactHead) * c; i < (p + 1) * shape.Tokens * c; i++)
            {
                error += Math.Pow(original[i] - restored[i], 2);
                energy += Math.Pow(original[i], 2);
            }

            Assert.True(error < 0.5 * energy, $"plane {p}: error {error:E3} of energy {energy:E3}");
        }
    }

    [Theory]
    [InlineData(49, 2, "key pairing")] // 1 | 2: pairing 3
    [InlineData(50, 0x40, "groups of 68 layers")] // 4 | 0x40: more layers than the model has
    [InlineData(52 + 3, 0x80, "nominal bits")] // level 0's nominal bits negative (the sign bit)
    [InlineData(52 + (4 * KvtcTransform.LevelCount) + 3, 0x80, "inverse frequency")] // the first key frequency negative
    public void Read_BadField_RefusedNamingIt(int offset, byte bits, string field)
    {
        byte[] file = KvtcTestTransforms.ForRealKv.Write();
        file[offset] |= bits;
        Rehash(file);

        var ex = Assert.Throws<InvalidDataException>(() => KvtcTransform.Read(file));
        Assert.Contains(field, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_KeysAsStoredWithFrequencies_Refused()
    {
        byte[] file = KvtcTestTransforms.ForRealKv.Write();
        file[49] = (byte)KvtcKeyPairing.None;
        Rehash(file);

        Assert.Contains("all-zero", Assert.Throws<InvalidDataException>(() => KvtcTransform.Read(file)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void WriteRead_KeyRotation_RoundTripsWithTheSameId()
    {
        KvtcTransform transform = KvtcTestTransforms.ForRealKv;
        KvtcTransform read = KvtcTransform.Read(transform.Write());

        Assert.Equal(transform.IdText, read.IdText);
        Assert.Equal(KvtcKeyPairing.HalfSplit, read.KeyRotation.Pairing);
        Assert.Equal(transform.KeyRotation.InverseFrequencies.ToArray(), read.KeyRotation.InverseFrequencies.ToArray());
        KvtcTransform asStored = KvtcTestTransforms.Fit(exactTail: 0, KvtcTestTransforms.Model(6), keyRotation: KvtcKeyRotation.None);
        Assert.True(KvtcTransform.Read(asStored.Write()).KeyRotation.IsNone);
    }

    /// <summary>Recomputes a transform file's checksum (its last 16 bytes) after a test edited a field.</summary>
    private static void Rehash(byte[] file) => System.IO.Hashing.XxHash128.Hash(file.AsSpan(0, file.Length - KvtcTransform.IdSize), file.AsSpan(file.Length - KvtcTransform.IdSize));
}
