using System.CommandLine;
using KvFetcher.Runtime;
using KvFetcher.Serving;
using KvFetcher.Store;

namespace KvFetcher.Cli.Commands;

/// <summary>
/// <c>kvfetch serve-llm</c>: an OpenAI-compatible inference server (completions, chat completions, streaming) on the
/// bundled or a given model, reusing the KV of any stored prompt prefix from a shared store, until Ctrl+C or SIGTERM.
/// </summary>
internal static class ServeLlmCommand
{
    public const string ApiKeysVariable = "KVFETCH_API_KEYS";

    public static Command Create()
    {
        Option<string?> model = CliOptions.Model();
        Option<string?> store = new("--store", "-s")
        {
            Description = "KV store shared by every instance: a directory, http(s)://HOST:PORT (kvfetch serve; token from $KVFETCH_TOKEN) or redis://HOST:PORT[,HOST:PORT] (Redis Cluster).",
        };
        Option<bool> noReuse = new("--no-reuse") { Description = "Compute every prompt (no store is used)." };
        Option<string[]> urls = new("--urls")
        {
            Description = "Where to listen, repeatable: http(s)://IP:PORT, localhost or * (port 0 = any free port; https needs --cert and --cert-key).",
            DefaultValueFactory = _ => ["http://127.0.0.1:8080"],
            AllowMultipleArgumentsPerToken = true,
        };
        Option<FileInfo?> apiKeys = new("--api-keys-file") { Description = $"File with the API keys clients must send, one a line (else ${ApiKeysVariable}, comma-separated; none: no check)." };
        Option<bool> tenantFromKey = new("--tenant-from-key") { Description = "Each API key is its own tenant: contexts are reused only for the same key (X-KvFetcher-Tenant narrows further)." };
        Option<bool> allowAnonymous = new("--allow-anonymous") { Description = "Serve without API keys on a non-loopback URL." };
        Option<bool> publicMetrics = new("--public-metrics") { Description = "Serve /metrics without an API key (with keys, every other route but /healthz needs one)." };
        Option<string> variant = new("--variant") { Description = "How chunks are stored and fetched: raw, exact (lossless), video8, cachegen0, ...; several comma-separated (e.g. raw,video8): each chunk is fetched as the one predicted fastest.", DefaultValueFactory = _ => "raw" };
        Option<string> reuseStrategy = new("--reuse-strategy") { Description = "How a stored prefix is obtained: ours (compute the front while fetching the back, meeting where the rates predict), ours-layer (ours, or a meeting chunk split by layers where that is predicted faster), cake (meet at run time) or fetch (fetch it whole in a waiting queue first).", DefaultValueFactory = _ => "ours" };
        Option<string> accuracy = CliOptions.Accuracy();
        Option<string?> modelId = new("--model-id") { Description = "The model name clients send (default: the model directory's name)." };
        Option<int> maxSessions = new("--max-sessions") { Description = "Requests holding a KV cache at once (memory bound).", DefaultValueFactory = _ => 8 };
        Option<int> maxQueue = new("--max-queue") { Description = "Requests waiting beyond --max-sessions; more get 429.", DefaultValueFactory = _ => 64 };
        Option<int> threads = new("--threads", "-t") { Description = "Kernel threads (0 = one per processor).", DefaultValueFactory = _ => 0 };
        Option<EngineKind> engine = CliOptions.Engine();
        Option<FileInfo?> cert = new("--cert") { Description = "PEM certificate for https URLs." };
        Option<FileInfo?> certKey = new("--cert-key") { Description = "PEM private key of --cert." };
        Option<FileInfo?> chunkSecret = CliOptions.ChunkSecret();
        var command = new Command("serve-llm", "Run an OpenAI-compatible inference server that reuses stored KV.")
        {
            model, store, noReuse, urls, apiKeys, tenantFromKey, allowAnonymous, publicMetrics, variant, reuseStrategy, accuracy, modelId, maxSessions, maxQueue, threads, engine, cert, certKey, chunkSecret,
        };
        command.SetAction(parse => CliOptions.Run(parse, () =>
        {
            bool reuse = !parse.GetValue(noReuse);
            string? location = parse.GetValue(store);
            if (reuse && string.IsNullOrWhiteSpace(location))
            {
                throw new ArgumentException("--store is required (or --no-reuse to compute every prompt).");
            }

            var options = new LlmServerOptions
            {
                Engine = new KvFetcherOptions
                {
                    ModelDirectory = CliOptions.ResolveModel(parse.GetValue(model)),
                    ModelId = parse.GetValue(modelId),
                    Store = reuse ? location : null,
                    Reuse = reuse,
                    Variant = parse.GetValue(variant)!,
                    ReuseStrategy = parse.GetValue(reuseStrategy)!,
                    Accuracy = parse.GetValue(accuracy)!,
                    MaxActiveSessions = parse.GetValue(maxSessions),
                    MaxQueuedRequests = parse.GetValue(maxQueue),
                    Threads = parse.GetValue(threads),
                    Engine = parse.GetValue(engine),
                    ChunkSecretFile = parse.GetValue(chunkSecret)?.FullName ?? Environment.GetEnvironmentVariable("KVFETCH_CHUNK_SECRET"),
                },
                Urls = parse.GetValue(urls)!,
                CertificateFile = parse.GetValue(cert)?.FullName,
                CertificateKeyFile = parse.GetValue(certKey)?.FullName,
                ApiKeys = ReadKeys(parse.GetValue(apiKeys)),
                TenantFromKey = parse.GetValue(tenantFromKey),
                AllowAnonymous = parse.GetValue(allowAnonymous),
                PublicMetrics = parse.GetValue(publicMetrics),
            };
            try
            {
                return ServeAsync(options).GetAwaiter().GetResult();
            }
            catch (KvStoreException ex)
            {
                throw new IOException($"The store '{location}' could not be opened: {ex.Message}", ex);
            }
        }));
        return command;
    }

    private static async Task<int> ServeAsync(LlmServerOptions options)
    {
        using var stop = new StopSignal();
        await using LlmServer server = await LlmServer.StartAsync(options);
        foreach (Uri address in server.Addresses)
        {
            Console.Out.WriteLine($"listening on {address}");
        }

        KvFetcherEngine engine = server.Engine;
        string reuse = engine.ReuseEnabled ? $"reusing KV from {options.Engine.Store} ({options.Engine.Variant})" : "reuse off";
        Console.Out.WriteLine($"serving {engine.ModelId} on {engine.EngineChoice} (chat template: {engine.Template.Name}); {reuse}; Ctrl+C stops");
        foreach (string line in engine.Floor?.Describe() ?? [])
        {
            Console.Out.WriteLine(line);
        }

        if (engine.Publisher?.LadderWarning is { } ladder)
        {
            Console.Error.WriteLine($"kvfetch: warning: {ladder}");
        }

        if (engine.Template.Unrecognised is { } why)
        {
            Console.Error.WriteLine($"kvfetch: warning: {why}");
        }

        await stop.Task;
        Console.Error.WriteLine("kvfetch: stopping (finishing requests in flight)");
        await server.StopAsync();
        return 0;
    }

    /// <summary>Keys from <paramref name="file"/> (one a line, blank lines and # comments skipped), else $KVFETCH_API_KEYS; null = none.</summary>
    private static string[]? ReadKeys(FileInfo? file)
    {
        if (file is not null)
        {
            string[] keys = [.. File.ReadAllLines(file.FullName).Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#'))];
            return keys.Length > 0 ? keys : throw new ArgumentException($"The API keys file '{file.FullName}' holds no key.");
        }

        string? fromEnvironment = Environment.GetEnvironmentVariable(ApiKeysVariable);
        return string.IsNullOrWhiteSpace(fromEnvironment)
            ? null
            : [.. fromEnvironment.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)];
    }
}
