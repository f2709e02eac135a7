using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using KvFetcher.Core;
using KvFetcher.Cuda;
using KvFetcher.Cuda.Tests;
using KvFetcher.Engine;
using KvFetcher.Engine.Tests;

// kvf-gpu-check [--checks [--check-filter TEXT[|TEXT...]]] [--kvtc-rate] [--bench] [--json FILE] [--llama FILE [--baseline]]: the CUDA engine's
// checks (the xunit suite's GpuChecks and KvtcGpuChecks) and its prefill/decode throughput next to the CPU engine's, on the machine it runs on;
// --kvtc-rate the kvtc GPU decoder's rate (GB/s of fp16 KV) next to the CPU decoder's, on the bundled model and (unless
// --no-large) on Llama-3-8B-shaped chunks; --llama
// writes the Llama-3-8B-shape comparison with PyTorch (bench/pytorch/compare.py joins both). Exit code 1 when a check
// fails.
string? llamaPath = ArgumentValue("--llama");
bool checks = args.Contains("--checks") || (!args.Contains("--bench") && llamaPath is null);
bool bench = args.Contains("--bench") || (!args.Contains("--checks") && llamaPath is null);
string? jsonPath = ArgumentValue("--json");

if (args.Contains("--nvrtc-smoke"))
{
    // Without a device: compile the engine's kernels through NVRTC (checks the native library resolution of this build).
    // Every optional kernel too (tensor-core, decode attention, GEMV), at Llama-3's head dimension.
    byte[] image = KvFetcher.Cuda.Gpu.KernelModule.CompileImage(
        KvFetcher.Cuda.Gpu.KernelModule.EngineSource, new Version(9, 0),
        ["HEAD_DIM=128", "KV=bf16_t", "ACT=bf16_t", "EMB=bf16_t", "TC_ATTENTION", "DECODE_ATTENTION", "GEMV"]);
    Console.WriteLine($"NVRTC compiled the engine kernels for sm_90: {image.Length} bytes");
    byte[] kvtc = KvFetcher.Cuda.Gpu.KernelModule.CompileImage(KvFetcher.Cuda.Kvtc.CudaKvtcKernels.Source, new Version(9, 0), KvFetcher.Cuda.Kvtc.CudaKvtcKernels.Defines);
    Console.WriteLine($"NVRTC compiled the kvtc kernels for sm_90: {kvtc.Length} bytes");
    return 0;
}

if (!GpuModels.Available)
{
    Console.WriteLine($"No CUDA device: {GpuModels.Reason}");
    return 2;
}

CudaContext context = GpuModels.Context;
Console.WriteLine($"device: {context}; driver {context.DriverVersion / 1000}.{context.DriverVersion % 1000 / 10}; {context.MultiprocessorCount} SMs");
Console.WriteLine($"repository: {TestData.RepositoryRoot}");

var results = new List<CheckResult>();
var timings = new List<(string Engine, string Setting, string Phase, int Context, int Tokens, double Seconds)>();
var kvtcRates = new List<(string Setting, double GigabytesPerSecond)>();
if (checks)
{
    var all = new List<(string, Func<CheckResult>)>();
    var info = new List<(string, Func<CheckResult>)>();
    foreach (string name in GpuModels.Names)
    {
        all.Add(($"logits {name} Stored", () => GpuChecks.Logits(name, CudaMatmulPrecision.Stored)));
        all.Add(($"logits {name} Float32", () => GpuChecks.Logits(name, CudaMatmulPrecision.Float32)));
        all.Add(($"logits {name} StoredSplit", () => GpuChecks.Logits(name, CudaMatmulPrecision.StoredSplit)));
        all.Add(($"logits {name} TensorFloat32", () => GpuChecks.Logits(name, CudaMatmulPrecision.TensorFloat32)));
        all.Add(($"greedy {name} Float32", () => GpuChecks.Greedy(name, CudaMatmulPrecision.Float32)));
        all.Add(($"greedy {name} TensorFloat32", () => GpuChecks.Greedy(name, CudaMatmulPrecision.TensorFloat32)));
        all.Add(($"greedy {name} StoredSplit", () => GpuChecks.Greedy(name, CudaMatmulPrecision.StoredSplit)));
        info.Add(($"greedy {name} Stored", () => GpuChecks.Greedy(name, CudaMatmulPrecision.Stored)));
    }

    foreach ((string name, DType storage) in new[] { ("bundled", DType.BFloat16), ("bundled", DType.Float16), ("tiny-mistral", DType.Float16), ("tiny-llama3-rope", DType.BFloat16) })
    {
        all.Add(($"flash attention {name} {storage}", () => GpuChecks.FlashAttentionVersusCudaCores(name, storage)));
    }

    foreach ((string name, DType storage) in new[] { ("bundled", DType.BFloat16), ("tiny-mistral", DType.Float16), ("tiny-llama3-rope", DType.BFloat16) })
    {
        all.Add(($"decode kernel {name} {storage}", () => GpuChecks.DecodeVersusCudaCores(name, storage)));
    }

    all.Add(("flash logits bundled Stored bf16 KV", () => GpuChecks.FlashLogits("bundled", DType.BFloat16)));
    all.Add(("flash logits tiny-llama3-rope Stored bf16 KV", () => GpuChecks.FlashLogits("tiny-llama3-rope", DType.BFloat16)));
    all.Add(("kv vs cpu", GpuChecks.KvVersusCpu));
    all.Add(("device argmax", GpuChecks.DeviceArgMax));
    foreach (int[] pattern in new[] { new[] { 1 }, new[] { 7 }, new[] { 100, 3, 129, 1, 64 } })
    {
        all.Add(($"chunked {string.Join(',', pattern)}", () => GpuChecks.ChunkedPrefill(pattern)));
    }

    foreach (DType storage in new[] { DType.Float32, DType.Float16, DType.BFloat16 })
    {
        all.Add(($"kv import/export {storage}", () => GpuChecks.ImportExportRoundTrip(storage)));
        all.Add(($"reuse {storage}", () => GpuChecks.ReuseAfterImport(storage)));
    }

    foreach ((string name, CudaMatmulPrecision precision, DType storage, int split, bool importFirst, bool fromDevice) in GpuChecks.LayerSplitCases)
    {
        all.Add(($"layer split {name} {precision} {storage} {split}{(importFirst ? " import-first" : "")}{(fromDevice ? " device" : "")}",
            () => GpuChecks.LayerSplitPrefill(name, precision, storage, split, importFirst, fromDevice)));
    }

    foreach (DType storage in new[] { DType.Float32, DType.BFloat16 })
    {
        all.Add(($"ours-layer reuse {storage}", () => GpuReuseChecks.OursLayerReuse(storage)));
    }

    all.Add(("kvtc gpu vs cpu", KvtcGpuChecks.GpuVersusCpu));
    all.Add(("kvtc gpu hostile input", KvtcGpuChecks.HostileInput));

    string? filter = ArgumentValue("--check-filter");
    // --check-filter A|B|C: the checks whose name contains any of the parts.
    string[] parts = filter?.Split('|', StringSplitOptions.RemoveEmptyEntries) ?? [];
    foreach ((string name, Func<CheckResult> check) in all.Where(c => parts.Length == 0 || parts.Any(p => c.Item1.Contains(p, StringComparison.Ordinal))))
    {
        CheckResult result = RunCheck(name, check);
        results.Add(result);
        Console.WriteLine(result);
    }

    // Measured and printed, not a pass/fail criterion: the fast setting's greedy agreement.
    foreach ((string name, Func<CheckResult> check) in info.Where(c => filter is null || c.Item1.Contains(filter, StringComparison.Ordinal)))
    {
        CheckResult result = RunCheck(name, check);
        Console.WriteLine($"INFO {result.Name}: {result.Detail}");
    }
}

if (args.Contains("--kvtc-rate"))
{
    void MeasureKvtcRate(string name, Func<(CheckResult, IReadOnlyList<(string, double)>)> measure)
    {
        CheckResult rate = RunCheck(name, () =>
        {
            (CheckResult result, IReadOnlyList<(string, double)> measured) = measure();
            kvtcRates.AddRange(measured);
            return result;
        });
        results.Add(rate);
        Console.WriteLine(rate);
    }

    MeasureKvtcRate("kvtc gpu rate", () => KvtcGpuChecks.Rate([1, 4, 8], seconds: 3));
    if (!args.Contains("--no-large"))
    {
        MeasureKvtcRate("kvtc gpu rate llama-3-8b shape", () => KvtcGpuChecks.RateLlamaShape([1, 4, 8], seconds: 3));
    }
}

if (bench)
{
    Bench(CudaMatmulPrecision.Stored, DType.BFloat16);
    Bench(CudaMatmulPrecision.StoredSplit, DType.BFloat16);
    Bench(CudaMatmulPrecision.Float32, DType.Float32);
    BenchCpu();
    if (!args.Contains("--no-large"))
    {
        BenchLarge(CudaMatmulPrecision.Stored, [4096, 16384], [4096, 16384, 32768]);
        BenchLarge(CudaMatmulPrecision.StoredSplit, [4096], [4096]);
    }
}

if (llamaPath is not null)
{
    try
    {
        BenchLlama(llamaPath, args.Contains("--baseline"));
    }
#pragma warning disable CA1031 // Report and go on: the checks' results still get written.
    catch (Exception e)
#pragma warning restore CA1031
    {
        Console.WriteLine($"llama benchmark failed: {e}");
    }
}

if (jsonPath is not null)
{
    using FileStream file = File.Create(jsonPath);
    using var json = new Utf8JsonWriter(file, new JsonWriterOptions { Indented = true });
    json.WriteStartObject();
    json.WriteString("device", context.ToString());
    json.WriteNumber("driver", context.DriverVersion);
    json.WriteStartArray("checks");
    foreach (CheckResult r in results)
    {
        json.WriteStartObject();
        json.WriteString("name", r.Name);
        json.WriteBoolean("passed", r.Passed);
        json.WriteString("detail", r.Detail);
        json.WriteEndObject();
    }

    json.WriteEndArray();
    json.WriteStartArray("throughput");
    foreach (var t in timings)
    {
        json.WriteStartObject();
        json.WriteString("engine", t.Engine);
        json.WriteString("setting", t.Setting);
        json.WriteString("phase", t.Phase);
        json.WriteNumber("context", t.Context);
        json.WriteNumber("tokens", t.Tokens);
        json.WriteNumber("seconds", t.Seconds);
        json.WriteNumber("tokensPerSecond", t.Tokens / t.Seconds);
        json.WriteEndObject();
    }

    json.WriteEndArray();
    json.WriteStartArray("kvtcDecodeRate");
    foreach ((string setting, double rate) in kvtcRates)
    {
        json.WriteStartObject();
        json.WriteString("setting", setting);
        json.WriteNumber("fp16GigabytesPerSecond", rate);
        json.WriteEndObject();
    }

    json.WriteEndArray();
    json.WriteEndObject();
}

int failed = results.Count(r => !r.Passed);
Console.WriteLine($"{results.Count - failed} passed, {failed} failed");
return failed == 0 ? 0 : 1;

// Prefill of N tokens (median of 3 after a warm-up) and 64 greedy decode steps after N - 65 tokens, N = 512/2048/4096.
void Bench(CudaMatmulPrecision precision, DType kv)
{
    using var model = CudaLanguageModel.Open(TestData.BundledModel, new CudaModelOptions { Context = context, MatmulPrecision = precision, KvStorageDType = kv, MaxStepTokens = 4096 });
    string setting = $"{precision} products, {kv.ToShortName()} KV";
    int[] tokens = RandomTokens(model.Config.VocabSize, model.Config.MaxPositionEmbeddings);
    using CudaSession session = model.CreateSession();
    foreach (int n in new[] { 512, 2048, 4096 })
    {
        double seconds = Median(() =>
        {
            session.Reset();
            return Time(() => session.PrefillGreedy(tokens.AsSpan(0, n), 0));
        });
        Record("cuda", setting, "prefill", n, n, seconds);

        const int Steps = 64;
        int prefix = n - Steps - 1;
        double decode = Median(() =>
        {
            session.Reset();
            int next = session.PrefillGreedy(tokens.AsSpan(0, prefix), 0);
            return Time(() =>
            {
                for (int i = 0; i < Steps; i++)
                {
                    next = session.DecodeGreedy(next, prefix + i);
                }
            });
        });
        Record("cuda", setting, "decode", n, Steps, decode);
    }
}

// Llama-3-8B's shape with random bf16 weights, bf16 KV: prefill of N - 16 tokens (N in prefillContexts); 15 greedy
// decode steps after N - 16 positions (N in decodeContexts) filled by importing KV from device memory (what the
// positions hold does not change the time).
void BenchLarge(CudaMatmulPrecision precision, int[] prefillContexts, int[] decodeContexts)
{
    KvFetcher.Engine.Model.ModelConfig config = KvFetcher.Engine.Model.ModelShapes.Llama3Size8B();
    long start = Stopwatch.GetTimestamp();
    using var model = CudaLanguageModel.CreateWithRandomWeights(config, seed: 1, new CudaModelOptions { Context = context, MatmulPrecision = precision, KvStorageDType = DType.BFloat16, MaxStepTokens = 4096 });
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"llama-3-8b shape ({model.WeightBytes >> 20} MiB of weights) ready in {Stopwatch.GetElapsedTime(start).TotalSeconds:F1} s"));
    string setting = $"llama-3-8b shape, {precision} products, bf16 KV";
    int capacity = Math.Max(prefillContexts.DefaultIfEmpty(0).Max(), decodeContexts.DefaultIfEmpty(0).Max());
    int[] tokens = RandomTokens(config.VocabSize, capacity);
    using CudaSession session = model.CreateSession(capacity);
    session.PrefillGreedy(tokens.AsSpan(0, 512), 0);
    foreach (int n in prefillContexts)
    {
        session.Reset();
        int prefix = n - 16;
        double seconds = Time(() => session.PrefillGreedy(tokens.AsSpan(0, prefix), 0));
        Record("cuda", setting, "prefill", prefix, prefix, seconds);
    }

    const int ImportTokens = 1024;
    using DeviceBuffer kv = context.Allocate(session.Cache.GetExportByteCount(ImportTokens, DType.BFloat16));
    kv.CopyFrom(new byte[kv.Length]);
    foreach (int n in decodeContexts)
    {
        session.Reset();
        int prefix = n - 16;
        for (int at = 0; at < prefix; at += ImportTokens)
        {
            int count = Math.Min(ImportTokens, prefix - at);
            session.Cache.Import(at, at + count, DType.BFloat16, kv);
        }

        int next = tokens[prefix];
        double decode = Time(() =>
        {
            for (int i = 0; i < 15; i++)
            {
                next = session.DecodeGreedy(next, prefix + i);
            }
        });
        Record("cuda", setting, "decode", n, 15, decode);
    }
}

// The issue 13 comparison, Llama-3-8B's shape with random bf16 weights, Stored products (bf16 activations, as
// PyTorch runs them), bf16 KV, tensor-core prefill attention: prefill of 4K/16K/32K tokens (median of 3 after a
// warm-up), 32K as 512-token chunks on top of the cache (the faster of 2), 16 greedy decode steps at 4K/16K/32K
// context (positions filled by importing random KV), and the device memory the model and its session hold. With
// baseline, first the CUDA-core attention kernel's prefill at 4K and 16K (one run each).
void BenchLlama(string path, bool baseline)
{
    const int ChunkTokens = 512;
    const int DecodeSteps = 16;
    int[] contexts = [4096, 16384, 32768];
    KvFetcher.Engine.Model.ModelConfig config = KvFetcher.Engine.Model.ModelShapes.Llama3Size8B();
    int capacity = contexts[^1];
    int[] tokens = RandomTokens(config.VocabSize, capacity);
    using FileStream file = File.Create(path);
    using var json = new Utf8JsonWriter(file, new JsonWriterOptions { Indented = true });
    json.WriteStartObject();
    json.WriteString("engine", "kvfetcher-cuda");
    json.WriteString("device", context.ToString());
    json.WriteString("setting", "Stored products (bf16 activations), bf16 KV");
    foreach (CudaAttentionKernel kernel in baseline ? new[] { CudaAttentionKernel.CudaCores, CudaAttentionKernel.TensorCores } : [CudaAttentionKernel.TensorCores])
    {
        long freeBefore = context.GetMemoryInfo().Free;
        long started = Stopwatch.GetTimestamp();
        using var model = CudaLanguageModel.CreateWithRandomWeights(config, seed: 1, new CudaModelOptions
        {
            Context = context, MatmulPrecision = CudaMatmulPrecision.Stored, KvStorageDType = DType.BFloat16, MaxStepTokens = 4096, Attention = kernel,
        });
        using CudaSession session = model.CreateSession(capacity);
        long heldBytes = freeBefore - context.GetMemoryInfo().Free;
        string attention = model.UsesTensorCoreAttention ? "tensor cores" : "CUDA cores";
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"llama-3-8b shape, attention on {attention}: ready in {Stopwatch.GetElapsedTime(started).TotalSeconds:F1} s, {heldBytes >> 20} MiB held"));
        json.WriteStartObject(kernel == CudaAttentionKernel.TensorCores ? "engine13" : "baseline");
        json.WriteString("attention", attention);
        json.WriteNumber("weightBytes", model.WeightBytes);
        json.WriteNumber("heldBytes", heldBytes);
        session.PrefillGreedy(tokens.AsSpan(0, 512), 0);
        json.WriteStartArray("prefill");
        foreach (int n in kernel == CudaAttentionKernel.TensorCores ? contexts : [4096, 16384])
        {
            Func<double> once = () =>
            {
                session.Reset();
                return Time(() => session.PrefillGreedy(tokens.AsSpan(0, n), 0));
            };
            double seconds = kernel == CudaAttentionKernel.TensorCores ? Median(once) : once();
            Record("cuda", $"llama-3-8b shape, Stored, bf16 KV, attention on {attention}", "prefill", n, n, seconds);
            WriteRow(json, n, n, seconds);
        }

        json.WriteEndArray();
        if (kernel != CudaAttentionKernel.TensorCores)
        {
            json.WriteEndObject();
            continue;
        }

        json.WriteStartArray("chunked");
        double best = double.MaxValue;
        for (int run = 0; run < 2; run++)
        {
            session.Reset();
            best = Math.Min(best, Time(() =>
            {
                for (int at = 0; at < capacity; at += ChunkTokens)
                {
                    session.PrefillGreedy(tokens.AsSpan(at, ChunkTokens), at);
                }
            }));
        }

        Record("cuda", $"llama-3-8b shape, Stored, bf16 KV, {ChunkTokens}-token chunks", "chunked prefill", capacity, capacity, best);
        WriteRow(json, capacity, capacity, best);
        json.WriteEndArray();

        // Decode: the context's positions filled with random KV by import, then greedy steps (3 warm-up steps first).
        const int ImportTokens = 1024;
        byte[] random = new byte[session.Cache.GetExportByteCount(ImportTokens, DType.BFloat16)];
        var generator = new Random(3);
        for (int i = 0; i < random.Length; i += 2)
        {
            // bf16 in [-2, 2): sign, exponent 120..127, random mantissa.
            int bits = (generator.Next(2) << 15) | ((120 + generator.Next(8)) << 7) | generator.Next(128);
            random[i] = (byte)bits;
            random[i + 1] = (byte)(bits >> 8);
        }

        using DeviceBuffer kv = context.Allocate(random.Length);
        kv.CopyFrom(random);
        json.WriteStartArray("decode");
        foreach (int n in contexts)
        {
            session.Reset();
            int prefix = n - DecodeSteps - 4;
            for (int at = 0; at < prefix; at += ImportTokens)
            {
                session.Cache.Import(at, Math.Min(at + ImportTokens, prefix), DType.BFloat16, kv);
            }

            int next = tokens[prefix];
            for (int i = 0; i < 3; i++)
            {
                next = session.DecodeGreedy(next, prefix + i);
            }

            double decode = Time(() =>
            {
                for (int i = 3; i < 3 + DecodeSteps; i++)
                {
                    next = session.DecodeGreedy(next, prefix + i);
                }
            });
            Record("cuda", "llama-3-8b shape, Stored, bf16 KV", "decode", n, DecodeSteps, decode);
            WriteRow(json, n, DecodeSteps, decode);
        }

        json.WriteEndArray();
        json.WriteEndObject();
    }

    json.WriteEndObject();
}

static void WriteRow(Utf8JsonWriter json, int contextTokens, int tokens, double seconds)
{
    json.WriteStartObject();
    json.WriteNumber("context", contextTokens);
    json.WriteNumber("tokens", tokens);
    json.WriteNumber("seconds", seconds);
    json.WriteNumber("tokensPerSecond", tokens / seconds);
    json.WriteEndObject();
}

string? ArgumentValue(string name)
{
    int at = Array.IndexOf(args, name);
    return at >= 0 && at + 1 < args.Length ? args[at + 1] : null;
}

void BenchCpu()
{
    using var model = LanguageModel.Open(TestData.BundledModel);
    int[] tokens = RandomTokens(model.Config.VocabSize, model.Config.MaxPositionEmbeddings);
    InferenceSession session = model.CreateSession();
    var logits = new float[model.Config.VocabSize];
    foreach (int n in new[] { 512, 2048, 4096 })
    {
        session.Reset();
        session.Prefill(tokens.AsSpan(0, Math.Min(n, 256)), 0, logits);
        session.Reset();
        double seconds = Time(() => session.Prefill(tokens.AsSpan(0, n), 0, logits));
        Record("cpu", $"{model.Threads} threads, fp32 KV", "prefill", n, n, seconds);

        const int Steps = 32;
        int prefix = n - Steps - 1;
        session.Reset();
        session.Prefill(tokens.AsSpan(0, prefix), 0, logits);
        double decode = Time(() =>
        {
            for (int i = 0; i < Steps; i++)
            {
                session.Decode(GpuChecks.ArgMax(logits), prefix + i, logits);
            }
        });
        Record("cpu", $"{model.Threads} threads, fp32 KV", "decode", n, Steps, decode);
    }
}

void Record(string engine, string setting, string phase, int contextTokens, int tokens, double seconds)
{
    timings.Add((engine, setting, phase, contextTokens, tokens, seconds));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"bench {engine} [{setting}] {phase} @ {contextTokens}: {tokens} tokens in {seconds * 1000:F2} ms = {tokens / seconds:F0} tok/s"));
}

static CheckResult RunCheck(string name, Func<CheckResult> check)
{
    try
    {
        return check();
    }
#pragma warning disable CA1031 // The runner reports every failure and goes on to the next check.
    catch (Exception e)
#pragma warning restore CA1031
    {
        return new CheckResult(name, false, $"{e.GetType().Name}: {e.Message}");
    }
}

static int[] RandomTokens(int vocab, int count)
{
    var random = new Random(1234);
    var tokens = new int[count];
    for (int i = 0; i < count; i++)
    {
        tokens[i] = random.Next(3, vocab);
    }

    return tokens;
}

static double Time(Action action)
{
    long start = Stopwatch.GetTimestamp();
    action();
    return Stopwatch.GetElapsedTime(start).TotalSeconds;
}

static double Median(Func<double> run)
{
    run();
    double[] samples = [run(), run(), run()];
    Array.Sort(samples);
    return samples[1];
}
