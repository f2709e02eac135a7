using KvFetcher.Bench.Gemm;

namespace KvFetcher.Bench;

/// <summary><c>kvfetch-bench &lt;mode&gt; [options]</c>: end-to-end and kernel benchmarks that print a table and write JSON.</summary>
internal static class Program
{
    private const string Usage =
        """
        usage: kvfetch-bench <mode> [options] [--verbose]
        modes:
          gemm    the engine's CPU matrix products against OpenBLAS (kvfetch-bench gemm --help)
          engine  prefill and decode throughput of the bundled model (--model, --lengths, --repeats,
                  --decode-tokens, --json)
          codecs  every codec and level on real KV over data/heldout and data/heldout-code: ratio vs fp16,
                  top-1 agreement, perplexity change, greedy match, encode/decode MB/s (--model, --documents,
                  --prefix, --continuation, --greedy, --max-documents, --codecs a,b, --json,
                  --partial FILE: the table so far after each document; kvtc: the model's transform if
                  calibrated, else fitted to --kvtc-documents N other documents, --kvtc-refit to always fit,
                  --kvtc-save to write the fitted one next to the model; fitting: --kvtc-exact-head N (4),
                  --kvtc-exact-tail N (0), --kvtc-sensitivity-documents N (2), --kvtc-bits 5,4.5,4,3.5,3,2.75,2.5,2,
                  --kvtc-keys-after-rope to code keys as stored instead of before RoPE, --kvtc-keys-unweighted
                  to allocate key bits without the query metric)
          kv-stats  per layer, K and V apart: entropy, delta entropy, outlier channels, keys before/after RoPE,
                  per-channel vs per-token error, attention sinks, perplexity sensitivity (kvfetch-bench kv-stats --help)
          video-ablation  quantized / + intra / + inter sizes per video layout and bit depth (--max-documents)
          store   put/get MB/s and p50/p99 latency of the disk store, our HTTP server and redis-server side by side
                  (kvfetch-bench store --help)
          serving N concurrent clients replaying document QA against serve-llm, reuse off vs on: TTFT p50/p99,
                  throughput, hit rate (kvfetch-bench serving --help)
          integrity  per-chunk cost of the chunk MAC (HMAC-SHA256) next to the XxHash3 checksum (--repeats)
          fingerprint  the model fingerprint on a multi-GB checkpoint: full hash serial/parallel, cached path (--gb)
          tokenize seconds to tokenize texts of growing length, with and without split points
                  (kvfetch-bench tokenize --help)
        """;

    private static int Main(string[] args)
    {
        bool verbose = args.Contains("--verbose");
        string[] rest = args.Where(a => a != "--verbose").ToArray();
        if (rest.Length == 0 || rest[0] is "-h" or "--help" or "help")
        {
            Console.WriteLine(Usage);
            return rest.Length == 0 ? 2 : 0;
        }

        string mode = rest[0];
        ReadOnlySpan<string> options = rest.AsSpan(1);
        bool help = options.Contains("--help") || options.Contains("-h");
        try
        {
            switch (mode)
            {
                case "gemm":
                    if (help)
                    {
                        Console.WriteLine(GemmBenchmarkOptions.Usage);
                        return 0;
                    }

                    return GemmBenchmark.Run(options);
                case "engine":
                    return EngineBenchmark.Run(options.ToArray());
                case "codecs":
                    return CodecBenchmark.Run(options.ToArray());
                case "kvtc-groups":
                    return KvtcGroupEstimate.Run(options.ToArray());
                case "kv-stats":
                    if (help)
                    {
                        Console.WriteLine(KvStatsBenchmark.Usage);
                        return 0;
                    }

                    return KvStatsBenchmark.Run(options.ToArray());
                case "video-ablation":
                    return VideoAblation.Run(options.ToArray());
                case "store":
                    if (help)
                    {
                        Console.WriteLine(StoreBenchmark.Usage);
                        return 0;
                    }

                    return StoreBenchmark.Run(options.ToArray());
                case "serving":
                    if (help)
                    {
                        Console.WriteLine(ServingBenchmark.Usage);
                        return 0;
                    }

                    return ServingBenchmark.Run(options.ToArray());
                case "integrity":
                    return IntegrityBenchmark.RunIntegrity(options.ToArray());
                case "fingerprint":
                    return IntegrityBenchmark.RunFingerprint(options.ToArray());
                case "tokenize":
                    if (help)
                    {
                        Console.WriteLine(TokenizeBenchmark.Usage);
                        return 0;
                    }

                    return TokenizeBenchmark.Run(options.ToArray());
                default:
                    Console.Error.WriteLine($"kvfetch-bench: unknown mode '{mode}'.");
                    Console.Error.WriteLine(Usage);
                    return 2;
            }
        }
        catch (ArgumentException ex)
        {
            Console.Error.WriteLine($"kvfetch-bench {mode}: {ex.Message}");
            return 2;
        }
        catch (Exception ex) when (!verbose)
        {
            Console.Error.WriteLine($"kvfetch-bench {mode}: {ex.GetType().Name}: {ex.Message} (--verbose for details)");
            return 1;
        }
    }
}
