namespace KvFetcher.NvdecBench;

/// <summary><c>kvfetch-nvdec-bench prepare|run [options]</c>: NVDEC against the CPU decoder on real-KV video streams.</summary>
internal static class Program
{
    private const string Usage =
        """
        usage: KvFetcher.NvdecBench <mode> [options] [--verbose]
          prepare --out DIR [--repo PATH] [--document 0] [--plan 256x2:12,10,8,4;1024x1:8,4;2048x1:8]
                  real KV of the bundled model encoded by the video codec (both layouts), checked with the CPU decoder
          run --data DIR [--json FILE] [--seconds 0.5] [--sessions 1,2,4,7,8,16] [--cpu-threads 1,16] [--tune]
                  NVDEC bit-exactness against the CPU decoder and refusal of bad input, then throughput per
                  stream group (--tune: also without display delay)
          reuse --repo PATH [--out DIR] [--bandwidths 1000,4000,8000,16000,40000] [--large 4096,16384]
                [--skip-checks] [--skip-bundled] [--decoders] [--serving [--serving-rates 4,8] [--serving-gbps 1,4,16]
                [--serving-requests 32] [--serving-context 2048] [--serving-fresh 384]]
                  the CUDA engine with NVDEC restore: NVDEC path == CPU decoders and greedy checks on the bundled model,
                  then the TTFT sweep on it and on a Llama-3-8B shape (random weights, real-KV chunks; --large 0 skips);
                  --decoders: instead of that sweep, the decode rates of NVDEC, CUDA cachegen and CPU, alone and together;
                  --serving: instead of that sweep, the serving benchmark (engine loop, Poisson arrivals) on the 8B shape
        """;

    private static int Main(string[] args)
    {
        bool verbose = args.Contains("--verbose");
        string[] rest = args.Where(a => a != "--verbose").ToArray();
        if (rest.Length == 0 || rest[0] is "-h" or "--help")
        {
            Console.WriteLine(Usage);
            return rest.Length == 0 ? 2 : 0;
        }

        try
        {
            return rest[0] switch
            {
                "prepare" => PrepareCommand.Run(rest[1..]),
                "run" => RunCommand.Run(rest[1..]),
                "reuse" => ReuseCommand.Run(rest[1..]),
                _ => throw new ArgumentException($"unknown mode '{rest[0]}'.\n{Usage}"),
            };
        }
        catch (ArgumentException ex)
        {
            Console.Error.WriteLine($"KvFetcher.NvdecBench: {ex.Message}");
            return 2;
        }
        catch (Exception ex) when (!verbose)
        {
            Console.Error.WriteLine($"KvFetcher.NvdecBench {rest[0]}: {ex.GetType().Name}: {ex.Message} (--verbose for details)");
            return 1;
        }
    }
}
