using System.Diagnostics;
using System.Globalization;
using System.Runtime.Intrinsics;
using System.Text.Json;
using KvFetcher.Bench.Native;
using KvFetcher.Core;
using KvFetcher.Core.Threading;
using KvFetcher.Engine.Cpu;

namespace KvFetcher.Bench.Gemm;

/// <summary>
/// <c>kvfetch-bench gemm</c>: the engine's <see cref="MatMul"/> against OpenBLAS on the bundled model's products,
/// measured side by side in one process: per product, samples of the two libraries alternate (the order flips
/// every run) and the median of each is reported.
/// </summary>
internal static class GemmBenchmark
{
    /// <summary>The distinct products of the bundled model (hidden 384, 6 heads x 64, 2 KV heads, MLP 1024, vocab 8192, 8 layers).</summary>
    private static readonly ModelProduct[] s_products =
    [
        new("q_proj, o_proj", 384, 384, 2 * 8),
        new("k_proj, v_proj", 384, 128, 2 * 8),
        new("gate_proj, up_proj", 384, 1024, 2 * 8),
        new("down_proj", 1024, 384, 8),
        new("lm_head", 384, 8192, 1),
    ];

    /// <summary>Decode weights are cycled through enough copies to exceed any cache by this much.</summary>
    private const long ColdBytes = 256L << 20;

    public static int Run(ReadOnlySpan<string> args)
    {
        GemmBenchmarkOptions options = GemmBenchmarkOptions.Parse(args);
        Interop.OpenBlas.EnsureLoaded();
        if (options.Isa is not null)
        {
            MatMul.Isa = Enum.Parse<MatMulIsa>(options.Isa, ignoreCase: true);
        }

        Interop.OpenBlas.SetNumThreads(options.Threads);
        using var pool = new WorkerPool(options.Threads);
        var environment = DescribeEnvironment(options);
        foreach ((string key, string value) in environment)
        {
            Console.WriteLine($"{key,-22} {value}");
        }

        Console.WriteLine();
        Console.WriteLine($"Y[n, out] = X[n, k] · Wᵀ. Ours reads W as stored ({options.WeightType.ToShortName()}) and packs it per call; " +
            "OpenBLAS gets W already converted to fp32 (its best case).");
        Console.WriteLine($"Median of {options.Runs} interleaved samples of ~{options.SampleMilliseconds} ms each (after warm-up; " +
            $"{options.SettleMilliseconds} ms idle before each).");

        var gemm = new List<GemmResult>();
        foreach (int n in options.Tokens)
        {
            Console.WriteLine();
            Console.WriteLine($"n = {n} tokens (prefill GEMM)");
            Console.WriteLine($"  {"product",-20} {"k",5} {"out",5} {"ours ms",9} {"BLAS ms",9} {"ours GFLOPS",12} {"BLAS GFLOPS",12} {"ratio",7} {"max rel Δ",10}");
            var rows = new List<GemmResult>();
            foreach (ModelProduct product in s_products)
            {
                using var gemmCase = new GemmCase(n, product.K, product.Out, options.WeightType, copies: 1, pool, seed: n + product.Out);
                GemmResult result = Measure(product, gemmCase, options);
                rows.Add(result);
                Console.WriteLine(
                    $"  {product.Name,-20} {product.K,5} {product.Out,5} {result.OursSeconds * 1e3,9:F3} {result.BlasSeconds * 1e3,9:F3} " +
                    $"{result.OursGflops,12:F1} {result.BlasGflops,12:F1} {result.Ratio,7:F2} {result.MaxRelativeDifference,10:E1}");
            }

            GemmResult mix = ModelMix(n, rows);
            Console.WriteLine(
                $"  {"model mix (1 pass)",-20} {"",5} {"",5} {mix.OursSeconds * 1e3,9:F3} {mix.BlasSeconds * 1e3,9:F3} " +
                $"{mix.OursGflops,12:F1} {mix.BlasGflops,12:F1} {mix.Ratio,7:F2}");
            gemm.AddRange(rows);
            gemm.Add(mix);
        }

        var decode = new List<GemmResult>();
        if (options.Decode)
        {
            Console.WriteLine();
            Console.WriteLine("n = 1 (decode GEMV): GB/s of weights read; ours reads " +
                $"{options.WeightType.ToShortName()}, OpenBLAS sgemv reads fp32. 'hot': one W, cache-resident; 'cold': W cycled through >= {ColdBytes >> 20} MiB of copies.");
            Console.WriteLine($"  {"product",-20} {"k",5} {"out",5} {"cache",5} {"ours µs",9} {"BLAS µs",9} {"ours GB/s",10} {"BLAS GB/s",10} {"speedup",8} {"max rel Δ",10}");
            foreach (bool cold in new[] { false, true })
            {
                foreach (ModelProduct product in s_products)
                {
                    int copies = cold ? (int)Math.Clamp(ColdBytes / ((long)product.K * product.Out * sizeof(float)), 1, 256) : 1;
                    using var gemmCase = new GemmCase(1, product.K, product.Out, options.WeightType, copies, pool, seed: product.Out);
                    GemmResult result = Measure(product, gemmCase, options) with { Cold = cold };
                    decode.Add(result);
                    Console.WriteLine(
                        $"  {product.Name,-20} {product.K,5} {product.Out,5} {(cold ? "cold" : "hot"),5} {result.OursSeconds * 1e6,9:F1} {result.BlasSeconds * 1e6,9:F1} " +
                        $"{result.OursGBps,10:F1} {result.BlasGBps,10:F1} {result.Ratio,8:F2} {result.MaxRelativeDifference,10:E1}");
                }
            }
        }

        PrintSummary(gemm, decode);
        if (options.JsonPath is not null)
        {
            WriteJson(options.JsonPath, environment, gemm, decode);
            Console.WriteLine($"Wrote {options.JsonPath}");
        }

        return 0;
    }

    private static GemmResult Measure(ModelProduct product, GemmCase gemmCase, GemmBenchmarkOptions options)
    {
        // Warm-up: JIT tiers, page faults on outputs, OpenBLAS thread start-up, scratch buffers.
        for (int i = 0; i < 3; i++)
        {
            gemmCase.RunOurs();
            gemmCase.RunBlas();
        }

        double once = Math.Min(Time(gemmCase.RunOurs, 1), Time(gemmCase.RunBlas, 1));
        int inner = (int)Math.Clamp(Math.Ceiling(options.SampleMilliseconds / 1e3 / Math.Max(once, 1e-7)), 1, 1_000_000);
        double[] ours = new double[options.Runs];
        double[] blas = new double[options.Runs];
        for (int run = 0; run < options.Runs; run++)
        {
            if (run % 2 == 0)
            {
                ours[run] = Sample(gemmCase.RunOurs, inner, options);
                blas[run] = Sample(gemmCase.RunBlas, inner, options);
            }
            else
            {
                blas[run] = Sample(gemmCase.RunBlas, inner, options);
                ours[run] = Sample(gemmCase.RunOurs, inner, options);
            }
        }

        return new GemmResult(
            product.Name, gemmCase.N, gemmCase.K, gemmCase.Out, Median(ours), Median(blas), gemmCase.Flops,
            gemmCase.StoredWeightBytes, gemmCase.Fp32WeightBytes, gemmCase.MaxRelativeDifference(), product.UsesPerToken);
    }

    /// <summary>One timed sample after a settling pause (see <see cref="GemmBenchmarkOptions.SettleMilliseconds"/>).</summary>
    private static double Sample(Action body, int inner, GemmBenchmarkOptions options)
    {
        if (options.SettleMilliseconds > 0)
        {
            Thread.Sleep(options.SettleMilliseconds);
        }

        return Time(body, inner);
    }

    /// <summary>Seconds per call, averaged over <paramref name="inner"/> back-to-back calls.</summary>
    private static double Time(Action body, int inner)
    {
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < inner; i++)
        {
            body();
        }

        return Stopwatch.GetElapsedTime(start).TotalSeconds / inner;
    }

    private static double Median(double[] values)
    {
        double[] sorted = [.. values];
        Array.Sort(sorted);
        int middle = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
    }

    /// <summary>All products of one forward pass (every layer plus the LM head), weighted by how often they run.</summary>
    private static GemmResult ModelMix(int n, List<GemmResult> rows)
    {
        double ours = rows.Sum(r => r.OursSeconds * r.UsesPerToken);
        double blas = rows.Sum(r => r.BlasSeconds * r.UsesPerToken);
        double flops = rows.Sum(r => r.Flops * r.UsesPerToken);
        return new GemmResult("model mix", n, 0, 0, ours, blas, flops, 0, 0, double.NaN, 1);
    }

    private static void PrintSummary(List<GemmResult> gemm, List<GemmResult> decode)
    {
        List<GemmResult> products = gemm.Where(r => r.Product != "model mix").ToList();
        Console.WriteLine();
        if (products.Count > 0)
        {
            double geomean = Math.Exp(products.Average(r => Math.Log(r.Ratio)));
            GemmResult worst = products.MinBy(r => r.Ratio)!;
            Console.WriteLine($"GEMM ratio ours/OpenBLAS: geometric mean {geomean:F2}, lowest {worst.Ratio:F2} ({worst.Product}, n = {worst.N}); " +
                $"{products.Count(r => r.Ratio >= 0.75)} of {products.Count} products at >= 0.75.");
        }

        if (decode.Count > 0)
        {
            double geomean = Math.Exp(decode.Average(r => Math.Log(r.Ratio)));
            Console.WriteLine($"GEMV speedup ours/OpenBLAS (time): geometric mean {geomean:F2}, lowest {decode.Min(r => r.Ratio):F2}.");
        }
    }

    private static List<(string Key, string Value)> DescribeEnvironment(GemmBenchmarkOptions options)
    {
        string cpu = File.Exists("/proc/cpuinfo")
            ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "?"
            : "?";
        return
        [
            ("cpu", $"{cpu}, {Environment.ProcessorCount} logical processors"),
            ("simd", $"Vector512 {(Vector512.IsHardwareAccelerated ? "accelerated" : "no")}, Vector256 {(Vector256.IsHardwareAccelerated ? "accelerated" : "no")}"),
            ("ours", $"KvFetcher MatMul, isa {MatMul.Isa}, weights {options.WeightType.ToShortName()}, {options.Threads} threads (WorkerPool)"),
            ("openblas core", Interop.OpenBlas.CoreName),
            ("openblas config", Interop.OpenBlas.Config),
            ("openblas threads", Interop.OpenBlas.GetNumThreads().ToString(CultureInfo.InvariantCulture)),
            ("OPENBLAS_CORETYPE", Environment.GetEnvironmentVariable("OPENBLAS_CORETYPE") ?? "(unset)"),
            ("OPENBLAS_L2_SIZE", Environment.GetEnvironmentVariable("OPENBLAS_L2_SIZE") ?? "(unset)"),
            (".NET", Environment.Version.ToString()),
        ];
    }

    private static void WriteJson(string path, List<(string Key, string Value)> environment, List<GemmResult> gemm, List<GemmResult> decode)
    {
        using FileStream stream = File.Create(path);
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        json.WriteStartObject();
        json.WriteStartObject("environment");
        foreach ((string key, string value) in environment)
        {
            json.WriteString(key, value);
        }

        json.WriteEndObject();
        json.WriteStartArray("gemm");
        foreach (GemmResult result in gemm)
        {
            WriteResult(json, result);
        }

        json.WriteEndArray();
        json.WriteStartArray("gemv");
        foreach (GemmResult result in decode)
        {
            WriteResult(json, result);
        }

        json.WriteEndArray();
        json.WriteEndObject();
    }

    private static void WriteResult(Utf8JsonWriter json, GemmResult result)
    {
        json.WriteStartObject();
        json.WriteString("product", result.Product);
        json.WriteNumber("n", result.N);
        json.WriteNumber("k", result.K);
        json.WriteNumber("out", result.Out);
        json.WriteNumber("uses_per_pass", result.UsesPerToken);
        if (result.N == 1)
        {
            json.WriteBoolean("cold", result.Cold);
        }

        json.WriteNumber("ours_seconds", result.OursSeconds);
        json.WriteNumber("openblas_seconds", result.BlasSeconds);
        json.WriteNumber("ours_gflops", result.OursGflops);
        json.WriteNumber("openblas_gflops", result.BlasGflops);
        if (result.OursBytes > 0)
        {
            json.WriteNumber("ours_weight_bytes", result.OursBytes);
            json.WriteNumber("openblas_weight_bytes", result.BlasBytes);
            json.WriteNumber("ours_gbps", result.OursGBps);
            json.WriteNumber("openblas_gbps", result.BlasGBps);
        }

        json.WriteNumber("ratio", result.Ratio);
        if (double.IsFinite(result.MaxRelativeDifference))
        {
            json.WriteNumber("max_relative_difference", result.MaxRelativeDifference);
        }

        json.WriteEndObject();
    }

    private sealed record ModelProduct(string Name, int K, int Out, int UsesPerToken);

    /// <summary>One measured product; <see cref="Ratio"/> is OpenBLAS time over ours (above 1: ours is faster).</summary>
    private sealed record GemmResult(
        string Product, int N, int K, int Out, double OursSeconds, double BlasSeconds, double Flops,
        long OursBytes, long BlasBytes, double MaxRelativeDifference, int UsesPerToken)
    {
        public bool Cold { get; init; }

        public double OursGflops => Flops / OursSeconds / 1e9;

        public double BlasGflops => Flops / BlasSeconds / 1e9;

        public double OursGBps => OursBytes / OursSeconds / 1e9;

        public double BlasGBps => BlasBytes / BlasSeconds / 1e9;

        public double Ratio => BlasSeconds / OursSeconds;
    }
}
