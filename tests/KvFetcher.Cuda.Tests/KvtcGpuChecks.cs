using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using KvFetcher.Codecs;
using KvFetcher.Codecs.Transform;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Core.Keys;
using KvFetcher.Cuda.Reuse;
using KvFetcher.Engine;
using KvFetcher.Engine.Tests;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Calibration;
using KvFetcher.Fetch.Restoring;

namespace KvFetcher.Cuda.Tests;

/// <summary>
/// The kvtc codec's GPU decoder (<see cref="GpuChunkRestorer"/> → CudaKvtcChunkDecoder) against its CPU decoder on the
/// bundled model's real KV, its refusal of hostile chunks, and its decode rate next to the CPU's. Written once: the
/// xunit tests assert on them and kvf-gpu-check prints them (<c>--check-filter kvtc</c>, <c>--kvtc-rate</c>).
/// </summary>
internal static class KvtcGpuChecks
{
    /// <summary>
    /// The largest RMS of (GPU - CPU) as a share of the RMS quantization error (CPU - original): the GPU products round
    /// the step-scaled synthesis rows to TF32 (10 mantissa bits) and sum in another order, which must stay far below
    /// what the codec itself loses.
    /// </summary>
    public const double RmsShareTolerance = 0.05;

    /// <summary>The largest |GPU - CPU| as a share of the largest |CPU - original| (one fp16 rounding step flipped at the largest values is allowed).</summary>
    public const double MaxShareTolerance = 0.25;

    private const int ChunkTokens = 256;
    private const int TestChunks = 4;
    private static readonly int[] s_levels = [0, 3, 7];
    private static readonly Lazy<Setup> s_setup = new(Prepare);

    /// <summary>GPU and CPU decodes of held-out chunks at levels 0, 3 and 7 (fp16 KV), compared.</summary>
    public static CheckResult GpuVersusCpu()
    {
        Setup setup = s_setup.Value;
        CudaLanguageModel model = GpuModels.Get("bundled", CudaMatmulPrecision.StoredSplit, DType.Float16);
        var restorer = new GpuChunkRestorer(model, pool: null, kvtcOnGpu: true);
        using IRestoreSlot slot = restorer.CreateSlot(setup.Shape, DType.Float16);
        using CudaKvCache cache = model.CreateCache(ChunkTokens);
        int bytes = checked((int)(setup.Shape.Elements * sizeof(ushort)));
        var gpu = new byte[bytes];
        var cpu = new byte[bytes];
        bool passed = true;
        var details = new List<string>();
        foreach (int level in s_levels)
        {
            double worstRmsShare = 0, worstMaxShare = 0, maxDiff = 0;
            for (int i = 0; i < setup.Chunks.Count; i++)
            {
                Chunk chunk = setup.Chunks[i];
                byte[] container = Encode(setup, chunk, level, out ChunkExpectation expected);
                slot.Decode(container, expected, new KvVariant(CodecId.Kvtc, (byte)level));
                slot.Restore(cache, 0, ChunkTokens);
                cache.Export(0, ChunkTokens, DType.Float16, gpu);
                TransformCodec.Instance.DecodeContainer(container, expected, cpu);
                (double rmsDiff, double maxAbsDiff) = Difference(gpu, cpu);
                (double rmsError, double maxError) = Difference(cpu, chunk.Kv);
                worstRmsShare = Math.Max(worstRmsShare, rmsDiff / rmsError);
                worstMaxShare = Math.Max(worstMaxShare, maxAbsDiff / maxError);
                maxDiff = Math.Max(maxDiff, maxAbsDiff);
                if (i == 0)
                {
                    details.Add(string.Create(CultureInfo.InvariantCulture, $"level {level}: max |gpu-cpu| {maxAbsDiff:E2}, rms {rmsDiff:E2}; codec error max {maxError:E2}, rms {rmsError:E2}"));
                }
            }

            bool ok = worstRmsShare <= RmsShareTolerance && worstMaxShare <= MaxShareTolerance;
            passed &= ok;
            details.Add(string.Create(CultureInfo.InvariantCulture, $"level {level} over {setup.Chunks.Count} chunks: max |gpu-cpu| {maxDiff:E2}, worst rms share {worstRmsShare:F4} (<= {RmsShareTolerance}), worst max share {worstMaxShare:F4} (<= {MaxShareTolerance}){(ok ? "" : " FAILED")}"));
        }

        return new CheckResult("kvtc gpu vs cpu", passed, $"transform {setup.TransformSource}; " + string.Join("; ", details));
    }

    /// <summary>
    /// Hostile chunks (truncated payload, a segment's declared length out of range, a wrong segment count, a segment
    /// boundary moved, stream bytes flipped, the escape count changed) are refused with <see cref="InvalidKvDataException"/>
    /// by the GPU decoder, which then still decodes an intact chunk as before.
    /// </summary>
    public static CheckResult HostileInput() => HostileInput(onGpu: true);

    /// <summary>The same hostile chunks through the CPU decoder (no device needed): each refused with <see cref="InvalidKvDataException"/>.</summary>
    public static CheckResult HostileInputOnCpu() => HostileInput(onGpu: false);

    private static CheckResult HostileInput(bool onGpu)
    {
        Setup setup = s_setup.Value;
        const int Level = 3;
        Chunk chunk = setup.Chunks[0];
        var parameters = new ArrayBufferWriter<byte>();
        var payloadWriter = new ArrayBufferWriter<byte>();
        TransformCodec.Instance.Encode(chunk.Kv, setup.Shape, DType.Float16, chunk.TokenStart, Level, parameters, payloadWriter);
        byte[] payload = payloadWriter.WrittenSpan.ToArray();
        var layout = new KvtcChunkLayout();
        layout.Read(parameters.WrittenSpan, payload, setup.Shape, DType.Float16, Level);
        // The first bit width with two segments or more: its segment table and its first two streams.
        int Field(int segment, int field) => layout.Segments[(segment * KvtcChunkLayout.SegmentFields) + field];
        int first = 0;
        int count = 0;
        for (int i = 0; i < layout.SegmentCount; i = first + count)
        {
            first = i;
            count = 0;
            while (first + count < layout.SegmentCount && Field(first + count, KvtcChunkLayout.BitsField) == Field(first, KvtcChunkLayout.BitsField))
            {
                count++;
            }

            if (count >= 2)
            {
                break;
            }
        }

        if (count < 2)
        {
            return new CheckResult("kvtc gpu hostile input", false, $"no bit width of the level-{Level} chunk has two segments ({layout.SegmentCount} segments)");
        }

        int firstStream = Field(first, KvtcChunkLayout.StreamOffsetField);
        int secondStream = Field(first + 1, KvtcChunkLayout.StreamOffsetField);
        int entries = firstStream - (count * 8);
        var cases = new List<(string Name, byte[] Payload)>
        {
            ("payload truncated by 100 bytes", payload[..^100]),
            ("segment 0 declares more bytes than the payload holds", With(payload, p => Write32(p, entries, int.MaxValue))),
            ("segment count off by one", With(payload, p => Write32(p, entries - 4, (int)Read32(p, entries - 4) + 1))),
            ("segment boundary moved by a byte", With(payload, p =>
            {
                Write32(p, entries, (int)Read32(p, entries) + 1);
                Write32(p, entries + 8, (int)Read32(p, entries + 8) - 1);
            })),
            ("segment 0 states zeroed", With(payload, p => p.AsSpan(firstStream, 8).Clear())),
            ("segment 1 bytes flipped", With(payload, p =>
            {
                for (int i = secondStream + 8; i < secondStream + 40; i++)
                {
                    p[i] ^= 0x5A;
                }
            })),
            ("segment 0 declares one escape more", With(payload, p => Write32(p, entries + 4, (int)Read32(p, entries + 4) + 1))),
            ("escape count off by one", With(payload, p => Write32(p, layout.EscapeOffset - 4, layout.EscapeCount + 1))),
        };

        var failures = new List<string>();
        var refusals = new List<string>();
        if (!onGpu)
        {
            var destination = new byte[setup.Shape.Elements * sizeof(ushort)];
            foreach ((string name, byte[] bad) in cases)
            {
                byte[] container = Container(setup, chunk, Level, parameters.WrittenSpan, bad, out ChunkExpectation expected);
                try
                {
                    TransformCodec.Instance.DecodeContainer(container, expected, destination);
                    failures.Add($"{name}: decoded without an error");
                }
                catch (InvalidKvDataException e)
                {
                    refusals.Add($"{name}: {e.Message}");
                }
            }

            return new CheckResult("kvtc cpu hostile input", failures.Count == 0, failures.Count == 0 ? $"{cases.Count} hostile chunks refused; e.g. {refusals[3]}" : string.Join("; ", failures));
        }

        CudaLanguageModel model = GpuModels.Get("bundled", CudaMatmulPrecision.StoredSplit, DType.Float16);
        var restorer = new GpuChunkRestorer(model, pool: null, kvtcOnGpu: true);
        using IRestoreSlot slot = restorer.CreateSlot(setup.Shape, DType.Float16);
        using CudaKvCache cache = model.CreateCache(ChunkTokens);
        foreach ((string name, byte[] bad) in cases)
        {
            byte[] container = Container(setup, chunk, Level, parameters.WrittenSpan, bad, out ChunkExpectation expected);
            try
            {
                slot.Decode(container, expected, new KvVariant(CodecId.Kvtc, Level));
                failures.Add($"{name}: decoded without an error");
            }
            catch (InvalidKvDataException e)
            {
                refusals.Add($"{name}: {e.Message}");
            }
#pragma warning disable CA1031 // Any other exception is the failure being checked for.
            catch (Exception e)
#pragma warning restore CA1031
            {
                failures.Add($"{name}: {e.GetType().Name} instead of InvalidKvDataException: {e.Message}");
            }
        }

        // The slot still decodes an intact chunk exactly as a fresh one does.
        byte[] good = Container(setup, chunk, Level, parameters.WrittenSpan, payload, out ChunkExpectation goodExpected);
        int bytes = checked((int)(setup.Shape.Elements * sizeof(ushort)));
        var gpu = new byte[bytes];
        var cpu = new byte[bytes];
        slot.Decode(good, goodExpected, new KvVariant(CodecId.Kvtc, Level));
        slot.Restore(cache, 0, ChunkTokens);
        cache.Export(0, ChunkTokens, DType.Float16, gpu);
        TransformCodec.Instance.DecodeContainer(good, goodExpected, cpu);
        (double rmsDiff, _) = Difference(gpu, cpu);
        (double rmsError, _) = Difference(cpu, chunk.Kv);
        if (!(rmsDiff <= RmsShareTolerance * rmsError))
        {
            failures.Add($"after the hostile chunks an intact chunk decodes with rms |gpu-cpu| {rmsDiff:E2} (codec rms error {rmsError:E2})");
        }

        return new CheckResult(
            "kvtc gpu hostile input",
            failures.Count == 0,
            failures.Count == 0 ? $"{cases.Count} hostile chunks refused, then an intact one decoded; e.g. {refusals[3]}" : string.Join("; ", failures));
    }

    /// <summary>
    /// The GPU decoder's rate in GB/s of fp16 KV produced (decode into the slot's device KV, not the cache import), with
    /// <paramref name="slots"/> slots on as many threads (a stream each), next to the CPU decoder's on one thread and on
    /// every core; <paramref name="seconds"/> per measurement.
    /// </summary>
    public static (CheckResult Result, IReadOnlyList<(string Setting, double GigabytesPerSecond)> Rates) Rate(int[] slots, double seconds)
    {
        Setup setup = s_setup.Value;
        const int Level = 3;
        var containers = new List<(byte[] Container, ChunkExpectation Expected)>();
        foreach (Chunk chunk in setup.Chunks)
        {
            byte[] container = Encode(setup, chunk, Level, out ChunkExpectation expected);
            containers.Add((container, expected));
        }

        return Measure("kvtc gpu rate", $"bundled model, level {Level}", setup.Shape, containers, new KvVariant(CodecId.Kvtc, Level), slots, seconds, cpuThreads: [1, Environment.ProcessorCount]);
    }

    /// <summary>
    /// The rate on chunks of Llama-3-8B's KV shape (32 layers, 8 KV heads of 128, 256 tokens; 32 MiB of fp16 each): a
    /// synthetic transform of one layer per block (1,024 channels, identity synthesis, 4 bits per component, Llama-3's
    /// rotary frequencies) and Gaussian KV, so the segments, the 1,024 x 1,024 products and the key rotation are those
    /// of that model. The CPU decoder's rate from one chunk on one thread.
    /// </summary>
    public static (CheckResult Result, IReadOnlyList<(string Setting, double GigabytesPerSecond)> Rates) RateLlamaShape(int[] slots, double seconds)
    {
        KvFetcher.Engine.Model.ModelConfig config = KvFetcher.Engine.Model.ModelShapes.Llama3Size8B();
        var shape = new KvShape(config.NumLayers, ChunkTokens, config.NumKvHeads, config.HeadDim);
        int c = shape.Channels;
        int planes = shape.Layers * 2;
        long matrices = (long)planes * c * c;
        var identity = new float[matrices];
        for (long block = 0; block < planes; block++)
        {
            for (int k = 0; k < c; k++)
            {
                identity[(block * c * c) + ((long)k * c) + k] = 1f;
            }
        }

        var bits = new byte[KvtcTransform.LevelCount * planes * c];
        bits.AsSpan().Fill(4);
        var sigma = new float[planes * c];
        sigma.AsSpan().Fill(1f);
        var model = new ModelFingerprint(new Hash256(8, 8, 8, 8));
        var transform = new KvtcTransform(model, shape.Layers, shape.KvHeads, shape.HeadDim, 1, 4, 0, TransformCalibration.KeyRotationOf(config),
            [.. KvtcTransform.DefaultLevelBits], new float[planes * c], sigma, identity, (float[])identity.Clone(), bits);
        KvtcTransforms.Register(transform);
        var codec = new TransformCodec(transform);
        const int Level = 1;
        var containers = new (byte[] Container, ChunkExpectation Expected)[4];
        Parallel.For(0, containers.Length, i =>
        {
            var random = new Random(100 + i);
            var values = new Half[shape.Elements];
            for (long v = 0; v < values.Length; v++)
            {
                // Gaussian (Box-Muller), standard deviation 1.
                double u = 1 - random.NextDouble();
                values[v] = (Half)(Math.Sqrt(-2 * Math.Log(u)) * Math.Cos(2 * Math.PI * random.NextDouble()));
            }

            byte[] kv = System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
            var parameters = new ArrayBufferWriter<byte>();
            var payload = new ArrayBufferWriter<byte>();
            long tokenStart = (long)i * ChunkTokens;
            codec.Encode(kv, shape, DType.Float16, tokenStart, Level, parameters, payload);
            var header = new ChunkHeader { Codec = CodecId.Kvtc, Level = Level, DType = DType.Float16, Model = model, TokenStart = tokenStart, Shape = shape };
            var output = new ArrayBufferWriter<byte>();
            ChunkContainer.Write(header, parameters.WrittenSpan, payload.WrittenSpan, output);
            containers[i] = (output.WrittenSpan.ToArray(), new ChunkExpectation(default, model, tokenStart, shape, DType.Float16));
        });

        return Measure("kvtc gpu rate llama-3-8b shape", $"llama-3-8b shape (synthetic transform, 4 bits per component), level {Level}", shape, [.. containers],
            new KvVariant(CodecId.Kvtc, Level), slots, seconds, cpuThreads: [1]);
    }

    private static (CheckResult Result, IReadOnlyList<(string Setting, double GigabytesPerSecond)> Rates) Measure(string name, string what, KvShape shape,
        List<(byte[] Container, ChunkExpectation Expected)> containers, KvVariant variant, int[] slots, double seconds, int[] cpuThreads)
    {
        CudaLanguageModel model = GpuModels.Get("bundled", CudaMatmulPrecision.StoredSplit, DType.Float16);
        var restorer = new GpuChunkRestorer(model, pool: null, kvtcOnGpu: true);
        long chunkBytes = shape.Elements * sizeof(ushort);
        long compressed = containers.Sum(c => (long)c.Container.Length) / containers.Count;
        var rates = new List<(string, double)>();
        foreach (int count in slots)
        {
            IRestoreSlot[] slotList = [.. Enumerable.Range(0, count).Select(_ => restorer.CreateSlot(shape, DType.Float16))];
            try
            {
                // Warm-up: kernels compiled, tables uploaded, scratch grown.
                foreach (IRestoreSlot s in slotList)
                {
                    s.Decode(containers[0].Container, containers[0].Expected, variant);
                }

                long decoded = 0;
                var stopwatch = Stopwatch.StartNew();
                Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = count }, i =>
                {
                    IRestoreSlot s = slotList[i];
                    long mine = 0;
                    for (int n = 0; stopwatch.Elapsed.TotalSeconds < seconds; n++)
                    {
                        (byte[] c, ChunkExpectation e) = containers[(n + i) % containers.Count];
                        s.Decode(c, e, variant);
                        mine++;
                    }

                    Interlocked.Add(ref decoded, mine);
                });
                double elapsed = stopwatch.Elapsed.TotalSeconds;
                rates.Add(($"{what}: gpu, {count} slot{(count == 1 ? "" : "s")}", decoded * chunkBytes / elapsed / 1e9));
            }
            finally
            {
                foreach (IRestoreSlot s in slotList)
                {
                    s.Dispose();
                }
            }
        }

        foreach (int threads in cpuThreads)
        {
            long decoded = 0;
            var stopwatch = Stopwatch.StartNew();
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, i =>
            {
                var destination = new byte[chunkBytes];
                long mine = 0;
                for (int n = 0; n == 0 || stopwatch.Elapsed.TotalSeconds < seconds; n++)
                {
                    (byte[] c, ChunkExpectation e) = containers[(n + i) % containers.Count];
                    TransformCodec.Instance.DecodeContainer(c, e, destination);
                    mine++;
                }

                Interlocked.Add(ref decoded, mine);
            });
            double elapsed = stopwatch.Elapsed.TotalSeconds;
            rates.Add(($"{what}: cpu, {threads} thread{(threads == 1 ? "" : "s")}", decoded * chunkBytes / elapsed / 1e9));
        }

        string table = string.Join("; ", rates.Select(r => string.Create(CultureInfo.InvariantCulture, $"{r.Item1[(what.Length + 2)..]}: {r.Item2:F3} GB/s")));
        return (new CheckResult(
            name,
            rates.All(r => r.Item2 > 0),
            string.Create(CultureInfo.InvariantCulture, $"fp16 KV produced, {what}, {shape} chunks of {chunkBytes >> 10} KiB ({compressed >> 10} KiB coded): {table}")), rates);
    }

    private static byte[] Encode(Setup setup, Chunk chunk, int level, out ChunkExpectation expected)
    {
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        TransformCodec.Instance.Encode(chunk.Kv, setup.Shape, DType.Float16, chunk.TokenStart, level, parameters, payload);
        return Container(setup, chunk, level, parameters.WrittenSpan, payload.WrittenSpan, out expected);
    }

    private static byte[] Container(Setup setup, Chunk chunk, int level, ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, out ChunkExpectation expected)
    {
        var header = new ChunkHeader
        {
            Codec = CodecId.Kvtc,
            Level = (byte)level,
            DType = DType.Float16,
            Key = default,
            Model = setup.Model,
            TokenStart = chunk.TokenStart,
            Shape = setup.Shape,
        };
        var output = new ArrayBufferWriter<byte>();
        ChunkContainer.Write(header, parameters, payload, output);
        expected = new ChunkExpectation(default, setup.Model, chunk.TokenStart, setup.Shape, DType.Float16);
        return output.WrittenSpan.ToArray();
    }

    /// <summary>RMS and max |a - b| of two fp16 arrays.</summary>
    private static (double Rms, double Max) Difference(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        ReadOnlySpan<Half> x = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(a);
        ReadOnlySpan<Half> y = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(b);
        double sum = 0, max = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double d = Math.Abs((double)x[i] - (double)y[i]);
            sum += d * d;
            max = Math.Max(max, double.IsNaN(d) ? double.PositiveInfinity : d);
        }

        return (Math.Sqrt(sum / x.Length), max);
    }

    private static byte[] With(byte[] payload, Action<byte[]> change)
    {
        byte[] copy = (byte[])payload.Clone();
        change(copy);
        return copy;
    }

    private static uint Read32(byte[] p, int at) => System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(p.AsSpan(at));

    private static void Write32(byte[] p, int at, int value) => System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(p.AsSpan(at), value);

    /// <summary>
    /// The bundled model on the CPU engine, its kvtc transform (the calibrated one next to it, else fitted here to three
    /// documents of data/heldout) and <see cref="TestChunks"/> chunks of fp16 KV of a fourth document.
    /// </summary>
    private static Setup Prepare()
    {
        using LanguageModel model = LanguageModel.Open(TestData.BundledModel);
        var config = model.Config;
        string source;
        KvtcTransform? transform = TransformCalibration.TryLoad(TestData.BundledModel, model.Fingerprint, out string? problem);
        IReadOnlyList<EvaluationDocument> documents = EvaluationDocuments.Load(model.Tokenizer, [Path.Combine(TestData.RepositoryRoot, "data", "heldout")], TestChunks * ChunkTokens, 4);
        if (documents.Count < 2)
        {
            throw new InvalidOperationException($"kvtc check: data/heldout holds {documents.Count} documents of {TestChunks * ChunkTokens} tokens; two are needed.");
        }

        if (transform is null)
        {
            long start = Stopwatch.GetTimestamp();
            transform = TransformCalibration.Fit(model, [.. documents.Skip(1)], tokensPerDocument: 1024, chunkTokens: ChunkTokens, sensitivityDocuments: 0);
            KvtcTransforms.Register(transform);
            source = string.Create(CultureInfo.InvariantCulture, $"fitted here to {documents.Count - 1} documents in {Stopwatch.GetElapsedTime(start).TotalSeconds:F1} s ({problem})");
        }
        else
        {
            source = $"{KvtcTransform.FileName} next to the model";
        }

        EvaluationDocument held = documents[0];
        int tokens = TestChunks * ChunkTokens;
        using InferenceSession session = model.CreateSession(tokens);
        session.Prefill(held.Tokens.AsSpan(0, tokens), 0, new float[config.VocabSize]);
        var shape = new KvShape(config.NumLayers, ChunkTokens, config.NumKvHeads, config.HeadDim);
        var chunks = new List<Chunk>();
        for (int i = 0; i < TestChunks; i++)
        {
            var kv = new byte[shape.Elements * sizeof(ushort)];
            session.Cache.Export(i * ChunkTokens, (i + 1) * ChunkTokens, DType.Float16, kv);
            chunks.Add(new Chunk(kv, i * ChunkTokens));
        }

        return new Setup(shape, transform.Model, chunks, source);
    }

    private sealed record Chunk(byte[] Kv, long TokenStart);

    private sealed record Setup(KvShape Shape, ModelFingerprint Model, IReadOnlyList<Chunk> Chunks, string TransformSource);
}
