using System.Globalization;
using KvFetcher.Core;

namespace KvFetcher.Bench.Gemm;

/// <summary>Options of <c>kvfetch-bench gemm</c>.</summary>
internal sealed class GemmBenchmarkOptions
{
    public const string Usage =
        """
        kvfetch-bench gemm [options]
          Times the engine's matrix products (KvFetcher.Engine.Cpu.MatMul) against OpenBLAS sgemm/sgemv on the
          bundled model's shapes, both in the same run, interleaved.
          --tokens LIST   prefill row counts, comma-separated (default 512,2048,4096)
          --threads N     threads for both libraries (default: processor count)
          --runs N        timed samples per product and library, median reported (default 7, at least 5)
          --sample-ms N   target length of one sample in ms (default 40)
          --settle-ms N   pause after every sample, so that the other library's threads (OpenBLAS spins its
                          workers for a while after a call) are idle when a sample starts (default 50)
          --dtype D       weight dtype of our side: bf16, fp16 or fp32 (default bf16)
          --isa I         our instruction set: Vector512, Vector256 or Scalar (default: the best one)
          --no-decode     skip the n = 1 (GEMV) section
          --json PATH     also write the results as JSON
        """;

    public int[] Tokens { get; init; } = [512, 2048, 4096];

    public int Threads { get; init; } = Environment.ProcessorCount;

    public int Runs { get; init; } = 7;

    public double SampleMilliseconds { get; init; } = 40;

    public int SettleMilliseconds { get; init; } = 50;

    public DType WeightType { get; init; } = DType.BFloat16;

    public string? Isa { get; init; }

    public bool Decode { get; init; } = true;

    public string? JsonPath { get; init; }

    /// <summary>Parses the options after the mode; throws <see cref="ArgumentException"/> naming a bad one.</summary>
    public static GemmBenchmarkOptions Parse(ReadOnlySpan<string> args)
    {
        int[] tokens = [512, 2048, 4096];
        int threads = Environment.ProcessorCount;
        int runs = 7;
        double sampleMs = 40;
        int settleMs = 50;
        DType dtype = DType.BFloat16;
        string? isa = null;
        bool decode = true;
        string? json = null;
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i];
            switch (name)
            {
                case "--tokens":
                    tokens = Value(args, ref i).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                        .Select(t => PositiveInt(name, t)).ToArray();
                    break;
                case "--threads":
                    threads = PositiveInt(name, Value(args, ref i));
                    break;
                case "--runs":
                    runs = Math.Max(5, PositiveInt(name, Value(args, ref i)));
                    break;
                case "--sample-ms":
                    sampleMs = PositiveInt(name, Value(args, ref i));
                    break;
                case "--settle-ms":
                    settleMs = int.TryParse(Value(args, ref i), NumberStyles.None, CultureInfo.InvariantCulture, out int settle)
                        ? settle
                        : throw new ArgumentException($"{name}: '{args[i]}' is not a non-negative integer.");
                    break;
                case "--dtype":
                    string text = Value(args, ref i);
                    if (!DTypeExtensions.TryParse(text, out dtype))
                    {
                        throw new ArgumentException($"--dtype: '{text}' is not bf16, fp16 or fp32.");
                    }

                    break;
                case "--isa":
                    isa = Value(args, ref i);
                    break;
                case "--no-decode":
                    decode = false;
                    break;
                case "--json":
                    json = Value(args, ref i);
                    break;
                default:
                    throw new ArgumentException($"Unknown option '{name}' for mode gemm.");
            }
        }

        return new GemmBenchmarkOptions
        {
            Tokens = tokens,
            Threads = threads,
            Runs = runs,
            SampleMilliseconds = sampleMs,
            SettleMilliseconds = settleMs,
            WeightType = dtype,
            Isa = isa,
            Decode = decode,
            JsonPath = json,
        };
    }

    private static string Value(ReadOnlySpan<string> args, ref int i)
    {
        if (i + 1 >= args.Length)
        {
            throw new ArgumentException($"Option {args[i]} needs a value.");
        }

        return args[++i];
    }

    private static int PositiveInt(string option, string text) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int value) && value > 0
            ? value
            : throw new ArgumentException($"{option}: '{text}' is not a positive integer.");
}
