using System.CommandLine;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Runtime;

namespace KvFetcher.Cli;

/// <summary>Options shared by several commands, and the one place that turns failures into exit codes.</summary>
internal static class CliOptions
{
    public const string BundledModelName = "kvf-pydoc-16m";

    public static readonly Option<bool> Verbose = new("--verbose", "-v")
    {
        Description = "Print stack traces of errors.",
        Recursive = true,
    };

    public static Option<string?> Model() => new("--model", "-m")
    {
        Description = $"Hugging Face model directory (default: the bundled {BundledModelName}, or $KVFETCH_MODEL).",
    };

    public static Option<string> Accuracy() => new("--accuracy")
    {
        Description = "Accuracy floor for lossy variants, from the model's calibration profile (kvfetch calibrate): default (top-1 agreement >= 99%, " +
            "perplexity change <= 1%), lossless (raw and exact only) or thresholds such as top1=0.995,ppl=0.005. Without a profile matching the model, only lossless variants are fetched.",
        DefaultValueFactory = _ => "default",
    };

    public static Option<EngineKind> Engine() => new("--engine")
    {
        Description = "Engine: auto (the GPU with NVDEC restore when CUDA can be used, else the CPU), cpu or cuda.",
        DefaultValueFactory = _ => EngineKind.Auto,
    };

    public static Option<FileInfo?> ChunkSecret() => new("--chunk-secret")
    {
        Description = "Deployment secret file (kvfetch secret new FILE): chunks are sealed with a per-tenant MAC and any chunk whose MAC " +
            "does not verify is computed instead, so the store need not be trusted (default: $KVFETCH_CHUNK_SECRET; none trusts the store).",
    };

    /// <summary>The authenticator of <c>--chunk-secret</c> or $KVFETCH_CHUNK_SECRET; null when neither is set (the store is trusted).</summary>
    public static ChunkAuthenticator? OpenChunkSecret(FileInfo? option)
    {
        string? path = option?.FullName ?? Environment.GetEnvironmentVariable("KVFETCH_CHUNK_SECRET");
        if (string.IsNullOrWhiteSpace(path))
        {
            return null;
        }

        ChunkAuthenticator authenticator = ChunkAuthenticator.FromSecretFile(path);
        Console.Error.WriteLine($"kvfetch: chunks are sealed and verified with the secret in {path}");
        return authenticator;
    }

    /// <summary>Loads the model on the chosen engine with fp16 KV (as chunks are stored) and says which engine runs it.</summary>
    public static LocalEngine OpenEngine(string? model, EngineKind kind, int threads)
    {
        LocalEngine engine = LocalEngine.Open(ResolveModel(model), new LocalEngineOptions { Kind = kind, Threads = threads });
        Console.Error.WriteLine($"kvfetch: engine {engine.Kind.ToString().ToLowerInvariant()}: {engine.Choice}");
        return engine;
    }

    /// <summary>The model directory to use: the option, $KVFETCH_MODEL, or the bundled model.</summary>
    public static string ResolveModel(string? option)
    {
        if (!string.IsNullOrWhiteSpace(option))
        {
            return option;
        }

        string? fromEnvironment = Environment.GetEnvironmentVariable("KVFETCH_MODEL");
        if (!string.IsNullOrWhiteSpace(fromEnvironment))
        {
            return fromEnvironment;
        }

        // Next to the executable (copied at build and publish), else in a models/ folder of an enclosing checkout.
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "models", BundledModelName);
            if (File.Exists(Path.Combine(candidate, "config.json")))
            {
                return candidate;
            }
        }

        throw new FileNotFoundException($"The bundled model {BundledModelName} was not found next to the executable or in an enclosing models/ folder; pass --model DIR.");
    }

    /// <summary>Runs a command body: a failure prints one line (the stack with --verbose) and exits non-zero.</summary>
    public static int Run(ParseResult parse, Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception ex) when (ex is InvalidKvDataException or IOException or UnauthorizedAccessException or ArgumentException or InvalidOperationException)
        {
            if (parse.GetValue(Verbose))
            {
                Console.Error.WriteLine($"kvfetch: error: {ex}");
            }
            else
            {
                Console.Error.WriteLine($"kvfetch: error: {ex.Message}");
            }

            return 1;
        }
    }
}
