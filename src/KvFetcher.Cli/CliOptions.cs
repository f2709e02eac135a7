using System.CommandLine;
using KvFetcher.Core.Containers;
using KvFetcher.Runtime;

namespace KvFetcher.Cli;

/// <summary>Options shared by several commands, and the one place that turns failures into exit codes.</summary>
internal static class CliOptions
{
    public const string BundledModelName = "kvf-code-32l";

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

    /// <summary>The exit code of a usage error (bad arguments), as System.CommandLine and POSIX tools use it.</summary>
    public const int UsageExitCode = 2;

    /// <summary>The exit code of a failure at run time.</summary>
    public const int FailureExitCode = 1;

    /// <summary>
    /// A command line that does not parse: each error on one line, then a one-line hint to the command's help (not the
    /// whole help); exits <see cref="UsageExitCode"/>.
    /// </summary>
    public static int UsageError(ParseResult parse)
    {
        ArgumentNullException.ThrowIfNull(parse);
        foreach (System.CommandLine.Parsing.ParseError error in parse.Errors)
        {
            Console.Error.WriteLine($"kvfetch: {error.Message}");
        }

        var names = new List<string>();
        for (System.CommandLine.Parsing.SymbolResult? result = parse.CommandResult; result is not null; result = result.Parent)
        {
            if (result is System.CommandLine.Parsing.CommandResult { Command: not RootCommand } command)
            {
                names.Insert(0, command.Command.Name);
            }
        }

        Console.Error.WriteLine($"Run 'kvfetch {string.Concat(names.Select(n => n + " "))}--help' for usage.");
        return UsageExitCode;
    }

    /// <summary>Adds a check that the option's value is at least <paramref name="minimum"/> (a usage error otherwise).</summary>
    public static Option<int> AtLeast(this Option<int> option, int minimum)
    {
        ArgumentNullException.ThrowIfNull(option);
        option.Validators.Add(result =>
        {
            // Only a value given on the command line that is an integer (the parser reports any other text itself).
            if (result.Tokens is [var token] && int.TryParse(token.Value, System.Globalization.CultureInfo.InvariantCulture, out int value) && value < minimum)
            {
                result.AddError($"{option.Name} must be at least {minimum}; got {value}.");
            }
        });
        return option;
    }

    /// <summary>Adds a check that <paramref name="parse"/> accepts the (string) option's text (its exception message becomes the usage error).</summary>
    public static T Parses<T>(this T option, Action<string> parse)
        where T : Option
    {
        ArgumentNullException.ThrowIfNull(option);
        ArgumentNullException.ThrowIfNull(parse);
        option.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<string?>() is not { } text)
            {
                return;
            }

            try
            {
                parse(text);
            }
            catch (Exception ex) when (ex is FormatException or ArgumentException or OverflowException)
            {
                result.AddError($"{option.Name}: {ex.Message}");
            }
        });
        return option;
    }

    /// <summary>
    /// Runs a command body: any failure prints one line, <c>kvfetch: error: ...</c> (the stack with --verbose), and exits
    /// <see cref="FailureExitCode"/>.
    /// </summary>
    public static int Run(ParseResult parse, Func<int> body)
    {
        ArgumentNullException.ThrowIfNull(parse);
        ArgumentNullException.ThrowIfNull(body);
        try
        {
            return body();
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            if (parse.GetValue(Verbose))
            {
                Console.Error.WriteLine($"kvfetch: error: {ex}");
            }
            else
            {
                Console.Error.WriteLine($"kvfetch: error: {OneLine(ex)}");
            }

            return FailureExitCode;
        }
    }

    /// <summary>The message on one line: an aggregate's first inner message, line breaks as spaces.</summary>
    private static string OneLine(Exception ex)
    {
        if (ex is AggregateException { InnerExceptions.Count: 1 } aggregate)
        {
            ex = aggregate.InnerExceptions[0];
        }

        return ex.Message.ReplaceLineEndings(" ");
    }
}
