using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using KvFetcher.Benchmarking;
using KvFetcher.Core;
using KvFetcher.Cuda;
using KvFetcher.Engine.Model;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Calibration;
using KvFetcher.Fetch.Restoring;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Runtime;
using KvFetcher.Store;
using KvFetcher.Store.Disk;

namespace KvFetcher.NvdecBench;

/// <summary>
/// <c>reuse</c>, on the GPU machine: remote KV reuse with the CUDA engine and NVDEC restore.
/// 1. Checks on the bundled model: for every stored variant, the GPU path (NVDEC for video, the CUDA-core decoder for
///    cachegen) restores exactly the bytes the CPU decoders
///    restore, and greedy continuations after reuse equal full prefill on the GPU (required for the lossless variants,
///    measured for the lossy ones).
/// 2. The TTFT sweep on the bundled model.
/// 3. The TTFT sweep on a Llama-3-8B-shaped model with random weights, whose stored chunks are made of the bundled
///    model's real KV (see <see cref="RealKvPool"/>), so codec sizes and decode rates are those of real KV.
/// </summary>
internal static class ReuseCommand
{
    private static readonly string[] Strategies = ["compute", "fetch-raw", "fetch-cachegen0", "fetch-video8", "cake-raw", "ours", "ours-layer"];

    private static readonly string[] CheckedVariants = ["raw", "exact", "cachegen0", "cachegen2", "video12", "video10", "video8", "video6", "video4"];

    public static int Run(string[] args) => RunAsync(args).GetAwaiter().GetResult();

    private static async Task<int> RunAsync(string[] args)
    {
        string repo = Args.Option(args, "--repo") ?? ".";
        string output = Args.Option(args, "--out") ?? ".";
        Directory.CreateDirectory(output);
        double[] bandwidths = [.. Args.Ints(args, "--bandwidths", [1000, 4000, 8000, 16000, 40000]).Select(b => (double)b)];
        int[] large = Args.Ints(args, "--large", [4096]);
        string bundledDirectory = Path.Combine(repo, "models", "kvf-code-32l");
        string documents = Path.Combine(repo, "data", "heldout");

        using LocalEngine bundled = LocalEngine.Open(bundledDirectory, new LocalEngineOptions { Kind = EngineKind.Cuda });
        Console.WriteLine($"engine: {bundled.Choice}; {Environment.ProcessorCount} cores");
        var model = (CudaLanguageModel)bundled.Model;
        int[] corpus = TtftSweep.Corpus(model, documents, 3840 + 16);
        int failures = 0;
        if (!args.Contains("--skip-checks"))
        {
            failures += await CheckAsync(bundled, corpus, Path.Combine(output, "gpu-reuse-checks.json"));
        }

        var reuse = new ReuseOptions { DecodeWorkers = 12, TransfersInFlight = 4, PublishWorkers = 12, MaxBufferedBytes = 1L << 30 };

        // The accuracy floor as serving applies it: lossy variants only where the bundled model's calibration profile
        // (committed next to it, checked against its fingerprint) shows they pass the default floor.
        CalibrationProfile? profile = CalibrationProfile.TryLoadFrom(bundledDirectory, out string? problem);
        FloorDecision floor = AccuracyFloor.Default.Decide(new TtftSweepOptions().Ladder, profile, model.Fingerprint, problem);
        foreach (string line in floor.Describe())
        {
            Console.WriteLine($"bundled model: {line}");
        }

        if (!args.Contains("--skip-bundled"))
        {
            TtftSweepResult result = await TtftSweep.RunAsync(model, new TtftSweepOptions
            {
                Contexts = [3840],
                BandwidthsMbps = bandwidths,
                Strategies = Strategies,
                Repeats = 3,
                Jitter = null,
                DocumentsDirectory = documents,
                Restorer = bundled.Restorer,
                Reuse = reuse,
                Log = Console.WriteLine,
            });
            Write(result, Path.Combine(output, "ttft-gpu-bundled.json"));
        }

        if (large.Length > 0 && large[0] > 0)
        {
            RealKvPool pool = RealKvPool.From(model, corpus[..3840]);
            ModelConfig config = ModelShapes.Llama3Size8B(large.Max() + 256);
            using LocalEngine big = LocalEngine.WithDecoders(
                CudaLanguageModel.CreateWithRandomWeights(config, seed: 1, new CudaModelOptions
                {
                    KvStorageDType = DType.Float16,
                    MatmulPrecision = CudaMatmulPrecision.Stored,
                    MaxStepTokens = 4096,
                }));
            Console.WriteLine($"llama-3-8b shape: {big.Choice}");

            // Its stored chunks are the bundled model's real KV, so the bundled model's measured accuracy is what a lossy
            // variant of them costs: the trusted profile is bound to this model's fingerprint (none or stale: lossless).
            ReuseOptions largeReuse = floor.ProfileTrusted
                ? reuse with { Profile = profile! with { ModelFingerprint = big.Model.Fingerprint.ToString() } }
                : reuse;
            if (args.Contains("--decoders"))
            {
                DecoderRates(big, pool, Path.Combine(output, "gpu-decoder-rates.txt"));
                return failures == 0 ? 0 : 1;
            }

            if (args.Contains("--serving"))
            {
                await ServingAsync(big, model, documents, args, output);
                return failures == 0 ? 0 : 1;
            }

            var random = new Random(7);
            TtftSweepResult result = await TtftSweep.RunAsync(big.Model, new TtftSweepOptions
            {
                Contexts = large,
                BandwidthsMbps = bandwidths,
                Strategies = Strategies,
                Repeats = 1,
                Jitter = null,
                Tokens = count => [.. Enumerable.Range(0, count).Select(_ => random.Next(config.VocabSize))],
                Warm = (writer, tokens, _) =>
                {
                    ContextPlan plan = writer.Plan(tokens);
                    byte[] kv = new byte[plan.ChunkBytes];
                    for (int chunk = 0; chunk < plan.ReusableChunks; chunk++)
                    {
                        pool.Fill(plan, chunk, kv);
                        if (!writer.Publisher.TryEnqueue(plan, chunk, kv))
                        {
                            throw new InvalidOperationException($"The publisher dropped chunk {chunk}.");
                        }
                    }

                    return Task.CompletedTask;
                },
                Restorer = big.Restorer,
                Reuse = largeReuse,
                Log = Console.WriteLine,
            });
            Write(result, Path.Combine(output, $"ttft-gpu-llama3-8b-{string.Join('-', large)}.json"));
        }

        return failures == 0 ? 0 : 1;
    }

    /// <summary>The checks of step 1; returns the number that failed.</summary>
    private static async Task<int> CheckAsync(LocalEngine engine, int[] tokens, string jsonPath)
    {
        var model = (CudaLanguageModel)engine.Model;
        KvVariant[] ladder = [.. CheckedVariants.Select(KvVariant.Parse)];
        string directory = Directory.CreateTempSubdirectory("kvf-gpu-reuse-").FullName;
        var rows = new List<(string Variant, int Restored, bool Identical, int Greedy, double HostMs, double NvdecMs, long Bytes)>();
        int failures = 0;
        const int Continuation = 32;
        try
        {
            await using IKvStore store = DiskKvStore.Open(new DiskKvStoreOptions { Directory = directory, Fsync = false });
            var options = new ReuseOptions { Ladder = ladder, DecodeWorkers = 4, PublishWorkers = 12 };
            await using var nvdec = new KvReuse(model, store, options, restorer: engine.Restorer);
            await using var host = new KvReuse(model, store, options, restorer: HostChunkRestorer.Instance);
            await nvdec.WarmAsync(tokens);
            Console.WriteLine($"stored {nvdec.Publisher.Published} containers ({nvdec.Publisher.BytesStored / 1e6:F1} MB), {nvdec.Publisher.Failed} failed");

            int[] reference = Greedy(model, tokens, 0, null, Continuation);
            ContextPlan plan = nvdec.Plan(tokens);
            int prefix = plan.ReusableChunks * plan.ChunkTokens;
            foreach (KvVariant variant in ladder)
            {
                using CudaSession fromHost = model.CreateSession(tokens.Length + Continuation);
                using CudaSession fromNvdec = model.CreateSession(tokens.Length + Continuation);
                RestoreReport viaHost = await host.FetchPrefixAsync(fromHost, plan, variant);
                RestoreReport viaNvdec = await nvdec.FetchPrefixAsync(fromNvdec, plan, variant);
                bool identical = viaHost.ReusedTokens == prefix && viaNvdec.ReusedTokens == prefix && SameKv(fromHost.Cache, fromNvdec.Cache, prefix);
                if (viaHost.ReusedTokens < prefix || viaNvdec.ReusedTokens < prefix)
                {
                    Console.WriteLine($"  {variant}: cpu path restored {viaHost.ReusedTokens}, nvdec path {viaNvdec.ReusedTokens} of {prefix} tokens; chunk 0 directly: cpu {Diagnose(HostChunkRestorer.Instance, store, plan, variant)}; nvdec {Diagnose(engine.Restorer, store, plan, variant)}");
                }

                int[] continued = Greedy(model, tokens, fromNvdec.Cache.Length, fromNvdec, Continuation);
                int agree = reference.Zip(continued).TakeWhile(p => p.First == p.Second).Count();
                bool passed = identical && (!variant.IsLossless || agree == Continuation);
                failures += passed ? 0 : 1;
                rows.Add((variant.ToString(), viaNvdec.RestoredChunks, identical, agree, viaHost.Elapsed.TotalMilliseconds, viaNvdec.Elapsed.TotalMilliseconds, viaNvdec.BytesFetched));
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{(passed ? "PASS" : "FAIL")} {variant,-10} restored {viaNvdec.RestoredChunks}/{plan.ReusableChunks} chunks; GPU path == CPU decoders: {identical}; greedy after reuse equals full prefill for {agree}/{Continuation} tokens; fetch+decode+restore {viaHost.Elapsed.TotalMilliseconds:F1} ms (cpu) vs {viaNvdec.Elapsed.TotalMilliseconds:F1} ms ({engine.Restorer.Name}), {viaNvdec.BytesFetched / 1e6:F2} MB"));
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }

        using FileStream file = File.Create(jsonPath);
        using var json = new Utf8JsonWriter(file, new JsonWriterOptions { Indented = true });
        json.WriteStartObject();
        json.WriteString("device", model.Device);
        json.WriteString("restorer", engine.Restorer.Name);
        json.WriteNumber("promptTokens", tokens.Length);
        json.WriteStartArray("variants");
        foreach (var row in rows)
        {
            json.WriteStartObject();
            json.WriteString("variant", row.Variant);
            json.WriteNumber("restoredChunks", row.Restored);
            json.WriteBoolean("gpuEqualsCpu", row.Identical);
            json.WriteNumber("greedyTokensEqual", row.Greedy);
            json.WriteNumber("greedyTokens", Continuation);
            json.WriteNumber("cpuPathMs", row.HostMs);
            json.WriteNumber("gpuPathMs", row.NvdecMs);
            json.WriteNumber("bytes", row.Bytes);
            json.WriteEndObject();
        }

        json.WriteEndArray();
        json.WriteEndObject();
        return failures;
    }

    /// <summary>
    /// Decode rates of the GPU path's decoders on Llama-3-8B-shaped chunks of real KV: NVDEC (video8), the CUDA-core
    /// CacheGen decoder (cachegen0) and the CPU (exact), each alone and all at once, in GB/s of fp16 KV produced.
    /// </summary>
    private static void DecoderRates(LocalEngine engine, RealKvPool pool, string path)
    {
        const int Chunks = 24;
        var random = new Random(3);
        int[] tokens = [.. Enumerable.Range(0, (Chunks * 256) + 1).Select(_ => random.Next(engine.Model.Config.VocabSize))];
        ContextPlan plan = ContextPlan.Create(engine.Model.Fingerprint, "", tokens, 256, engine.Model.Config.NumLayers, engine.Model.Config.NumKvHeads, engine.Model.Config.HeadDim, DType.Float16);
        KvVariant[] variants = [KvVariant.Parse("video8"), KvVariant.Parse("cachegen0"), KvVariant.Exact];
        var containers = new Dictionary<KvVariant, byte[][]>();
        foreach (KvVariant variant in variants)
        {
            var encoded = new byte[Chunks][];
            Parallel.For(0, Chunks, chunk =>
            {
                byte[] kv = new byte[plan.ChunkBytes];
                pool.Fill(plan, chunk, kv);
                var parameters = new System.Buffers.ArrayBufferWriter<byte>();
                var payload = new System.Buffers.ArrayBufferWriter<byte>();
                var container = new System.Buffers.ArrayBufferWriter<byte>();
                variant.GetCodec().Encode(kv, plan.ChunkShape, plan.DType, plan.TokenStartOf(chunk), variant.Level, parameters, payload);
                Core.Containers.ChunkContainer.Write(plan.Header(chunk, variant), parameters.WrittenSpan, payload.WrittenSpan, container);
                encoded[chunk] = container.WrittenSpan.ToArray();
            });
            containers[variant] = encoded;
        }

        var lines = new List<string> { $"decode rates, GB/s of fp16 KV produced ({plan.ChunkBytes >> 20} MiB chunks of the Llama-3-8B shape, real KV; {engine.Restorer.Name})" };
        void Report(string name, params (KvVariant Variant, int Workers)[] mix)
        {
            // Each worker owns a slot and decodes its variant's chunks round after round for a fixed time.
            var stop = Stopwatch.StartNew();
            long[] produced = new long[mix.Length];
            var threads = new List<Thread>();
            using var start = new ManualResetEventSlim();
            for (int m = 0; m < mix.Length; m++)
            {
                (KvVariant variant, int workers) = mix[m];
                int index = m;
                for (int w = 0; w < workers; w++)
                {
                    int worker = w;
                    var thread = new Thread(() =>
                    {
                        using IRestoreSlot slot = engine.Restorer.CreateSlot(plan.ChunkShape, plan.DType);
                        start.Wait();
                        for (int i = worker; stop.Elapsed.TotalSeconds < 4; i += workers)
                        {
                            int chunk = i % Chunks;
                            slot.Decode(containers[variant][chunk], plan.Expectation(chunk), variant);
                            Interlocked.Add(ref produced[index], plan.ChunkBytes);
                        }
                    });
                    thread.Start();
                    threads.Add(thread);
                }
            }

            stop.Restart();
            start.Set();
            threads.ForEach(t => t.Join());
            double seconds = stop.Elapsed.TotalSeconds;
            string parts = string.Join(", ", mix.Select((x, i) => string.Create(CultureInfo.InvariantCulture, $"{x.Variant} x{x.Workers} {produced[i] / seconds / 1e9:F2}")));
            string line = string.Create(CultureInfo.InvariantCulture, $"{name,-28} total {produced.Sum() / seconds / 1e9:F2} GB/s  ({parts})");
            Console.WriteLine(line);
            lines.Add(line);
        }

        KvVariant video = variants[0], cachegen = variants[1], exact = variants[2];
        Report("nvdec alone", (video, 4));
        Report("nvdec alone", (video, 8));
        Report("cuda cachegen alone", (cachegen, 4));
        Report("cuda cachegen alone", (cachegen, 12));
        Report("cpu exact alone", (exact, 8));
        Report("cpu exact alone", (exact, 14));
        Report("all three at once", (video, 4), (cachegen, 6), (exact, 8));
        File.WriteAllLines(path, lines);
    }

    /// <summary>Decodes and restores chunk 0 of <paramref name="plan"/> through <paramref name="restorer"/> outside the fetcher, naming any failure.</summary>
    private static string Diagnose(IChunkRestorer restorer, IKvStore store, ContextPlan plan, KvVariant variant)
    {
        try
        {
            var container = new System.Buffers.ArrayBufferWriter<byte>();
            StoreRead read = store.GetAsync(plan.ObjectKeyOf(0, variant), container, ByteRange.All).AsTask().GetAwaiter().GetResult();
            if (!read.Found)
            {
                return "not in the store";
            }

            using IRestoreSlot slot = restorer.CreateSlot(plan.ChunkShape, plan.DType);
            slot.Decode(container.WrittenMemory, plan.Expectation(0), variant);
            return "decoded";
        }
        catch (Exception ex)
        {
            return $"{ex.GetType().Name}: {ex.Message}";
        }
    }

    /// <summary>Greedy tokens after <paramref name="tokens"/>: computed from <paramref name="filled"/> on (a new session from 0 when null).</summary>
    private static int[] Greedy(CudaLanguageModel model, int[] tokens, int filled, CudaSession? session, int count)
    {
        using CudaSession? owned = session is null ? model.CreateSession(tokens.Length + count) : null;
        CudaSession s = session ?? owned!;
        var result = new int[count];
        int next = s.PrefillGreedy(tokens.AsSpan(filled), filled);
        for (int i = 0; i < count; i++)
        {
            result[i] = next;
            if (i + 1 < count)
            {
                next = s.DecodeGreedy(next, tokens.Length + i);
            }
        }

        return result;
    }

    private static bool SameKv(CudaKvCache a, CudaKvCache b, int tokens)
    {
        var x = new byte[a.GetExportByteCount(tokens, a.StorageDType)];
        var y = new byte[x.Length];
        a.Export(0, tokens, a.StorageDType, x);
        b.Export(0, tokens, b.StorageDType, y);
        return x.AsSpan().SequenceEqual(y);
    }

    /// <summary>
    /// The serving benchmark (issue 17) on the Llama-3-8B shape: the engine loop with Poisson arrivals of reuse and fresh
    /// requests over the shaped store, prompts of real text through the bundled model's tokenizer (its ids fit the
    /// shape's vocabulary), chunks stored raw (the shape's own KV: lossless, so codec choice plays no part).
    /// </summary>
    private static async Task ServingAsync(LocalEngine big, CudaLanguageModel bundled, string documents, string[] args, string output)
    {
        using var model = new TokenizedModel(big.Model, bundled.Tokenizer, "llama-3-8b-shape (random weights)");
        ServingWorkloadResult served = await ServingWorkload.RunAsync(model, new ServingWorkloadOptions
        {
            DocumentsDirectory = documents,
            ContextTokens = Args.Int(args, "--serving-context", 2048),
            FreshTokens = Args.Int(args, "--serving-fresh", 384),
            Rates = [.. Args.Ints(args, "--serving-rates", [4, 8]).Select(r => (double)r)],
            Gbps = [.. Args.Ints(args, "--serving-gbps", [1, 4, 16]).Select(g => (double)g)],
            Requests = Args.Int(args, "--serving-requests", 32),
            Restorer = big.Restorer,
            Log = Console.WriteLine,
        });
        File.WriteAllText(Path.Combine(output, "serving-llama3-8b.json"), JsonSerializer.Serialize(served, BenchmarkJson.Default.ServingWorkloadResult));
        string table = ServingWorkload.Markdown(served);
        File.WriteAllText(Path.Combine(output, "serving-llama3-8b.md"), table);
        Console.WriteLine(table);
    }

    private static void Write(TtftSweepResult result, string path)
    {
        File.WriteAllText(path, JsonSerializer.Serialize(result, BenchmarkJson.Default.TtftSweepResult));
        Console.WriteLine($"wrote {path}");
    }

    /// <summary>
    /// Real KV (the bundled model's, fp16, of one long document) laid out as another model's chunks: channel
    /// <c>c</c> of layer <c>l</c> takes source channel <c>c mod C</c> of source layer <c>l mod L</c>, over a window
    /// of consecutive source tokens that starts at a different place for every (layer, head block, chunk), so no two
    /// blocks of a chunk repeat each other (which a video codec would exploit).
    /// </summary>
    private sealed class RealKvPool
    {
        private readonly ushort[] _values;
        private readonly int _layers;
        private readonly int _tokens;
        private readonly int _channels;

        private RealKvPool(ushort[] values, int layers, int tokens, int channels)
        {
            _values = values;
            _layers = layers;
            _tokens = tokens;
            _channels = channels;
        }

        public static RealKvPool From(CudaLanguageModel model, int[] tokens)
        {
            using CudaSession session = model.CreateSession(tokens.Length);
            _ = session.PrefillGreedy(tokens, 0);
            var bytes = new byte[session.Cache.GetExportByteCount(tokens.Length, DType.Float16)];
            session.Cache.Export(0, tokens.Length, DType.Float16, bytes);
            return new RealKvPool(MemoryMarshal.Cast<byte, ushort>(bytes).ToArray(), model.Config.NumLayers, tokens.Length, model.Config.NumKvHeads * model.Config.HeadDim);
        }

        public void Fill(ContextPlan plan, int chunk, Span<byte> destination)
        {
            if (plan.DType != DType.Float16)
            {
                throw new ArgumentException("The pool holds fp16 KV.", nameof(plan));
            }

            Span<ushort> kv = MemoryMarshal.Cast<byte, ushort>(destination);
            int tokens = plan.ChunkTokens;
            int channels = plan.ChunkShape.Channels;
            for (int layer = 0; layer < plan.ChunkShape.Layers; layer++)
            {
                for (int kind = 0; kind < 2; kind++)
                {
                    int source = (((layer % _layers) * 2) + kind) * _tokens;
                    for (int block = 0; block < channels; block += _channels)
                    {
                        int width = Math.Min(_channels, channels - block);
                        int start = (int)((((long)chunk * 7919) + (layer * 389) + (block / _channels * 97)) % (_tokens - tokens));
                        for (int t = 0; t < tokens; t++)
                        {
                            _values.AsSpan(((source + start + t) * _channels), width)
                                .CopyTo(kv.Slice((((((layer * 2) + kind) * tokens) + t) * channels) + block, width));
                        }
                    }
                }
            }
        }
    }
}
