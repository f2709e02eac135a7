using KvFetcher.Core.Containers;
using KvFetcher.Runtime;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Fetch.Calibration;
using KvFetcher.Serving.Scheduling;

namespace KvFetcher.Serving;

/// <summary>
/// How a <see cref="KvFetcherEngine"/> loads its model, reuses KV and bounds its work. Bindable from configuration
/// (<c>services.AddKvFetcher(configuration.GetSection("KvFetcher"))</c>); <see cref="Validate"/> runs before anything
/// is loaded or bound.
/// </summary>
public sealed class KvFetcherOptions
{
    /// <summary>The Hugging Face model directory (config.json, *.safetensors, tokenizer.json).</summary>
    public string ModelDirectory { get; set; } = "";

    /// <summary>The name clients use for the model (the <c>model</c> field); default: the directory's name.</summary>
    public string? ModelId { get; set; }

    /// <summary>
    /// The KV store: a directory (embedded disk store), <c>http(s)://HOST:PORT</c> (a <c>kvfetch serve</c> server, token
    /// from <see cref="StoreToken"/> or $KVFETCH_TOKEN) or <c>redis://HOST:PORT[,HOST:PORT]</c> (Redis or Redis Cluster).
    /// Null: no store, every prompt is computed.
    /// </summary>
    public string? Store { get; set; }

    /// <summary>The bearer token of an <c>http(s)://</c> store (else $KVFETCH_TOKEN).</summary>
    public string? StoreToken { get; set; }

    /// <summary>
    /// A deployment secret file (<c>kvfetch secret new FILE</c>): chunks are sealed with a MAC under a key derived for
    /// each tenant, and a chunk whose MAC does not verify is computed instead, so the store need not be trusted
    /// (docs/SECURITY.md). Null: the store is trusted.
    /// </summary>
    public string? ChunkSecretFile { get; set; }

    /// <summary>Look up and fetch stored prefixes, and store computed chunks (false: the store is not used).</summary>
    public bool Reuse { get; set; } = true;

    /// <summary>
    /// The variants chunks are stored as, comma-separated: <c>raw</c>, <c>exact</c> (both lossless), <c>video8</c>, ...
    /// With several, each request fetches every chunk as the stored variant predicted to arrive fastest over the rates
    /// measured so far (the most accurate one within 5% of it), e.g. <c>raw,video8</c>.
    /// </summary>
    public string Variant { get; set; } = "raw";

    /// <summary>
    /// How a request with a stored prefix obtains it: <c>ours</c> (compute the front in the engine's iterations while the
    /// back is fetched, meeting where the measured rates predict), <c>ours-layer</c> (ours, or, where the measured rates
    /// predict it faster, a meeting chunk split by layers: its lower layers computed while its upper layers are fetched,
    /// from raw or exact only), <c>cake</c> (the
    /// same as ours, meeting at run time, fetching the first variant), or <c>fetch</c> (a waiting queue fetches the whole
    /// prefix off the engine first).
    /// </summary>
    public string ReuseStrategy { get; set; } = "ours";

    /// <summary>
    /// The accuracy a lossy variant must have shown on this model (its <c>kvfetcher-profile.json</c>, written by
    /// <c>kvfetch calibrate</c>) to be fetched: <c>default</c> (top-1 agreement &gt;= 99%, perplexity change &lt;= 1%),
    /// <c>lossless</c> (raw and exact only) or thresholds such as <c>top1=0.995,ppl=0.005</c>. Without a profile that
    /// matches the model, only lossless variants are fetched (all are still stored).
    /// </summary>
    public string Accuracy { get; set; } = "default";

    /// <summary>The model's calibration profile file; null reads <c>kvfetcher-profile.json</c> in <see cref="ModelDirectory"/>.</summary>
    public string? CalibrationProfileFile { get; set; }

    /// <summary>Tokens per stored chunk.</summary>
    public int ChunkTokens { get; set; } = 256;

    /// <summary>
    /// The tenant of requests that name none (the in-process chat client's, and the server's when a request carries no
    /// tenant): contexts are reused only within a tenant.
    /// </summary>
    public string DefaultTenant { get; set; } = "";

    /// <summary>A chunk (or the lookup) that takes longer than this is computed instead.</summary>
    public TimeSpan FetchTimeout { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Requests holding a KV cache at once (fetching, prefilling or decoding): the engine's memory bound.</summary>
    public int MaxActiveSessions { get; set; } = 8;

    /// <summary>Requests waiting for a session beyond <see cref="MaxActiveSessions"/>; more are refused (HTTP 429).</summary>
    public int MaxQueuedRequests { get; set; } = 64;

    /// <summary>The most prompt tokens one engine iteration computes for one request (chunked prefill).</summary>
    public int PrefillStepTokens { get; set; } = 256;

    /// <summary>New tokens when a request sets no limit (capped by the room left in the context).</summary>
    public int DefaultMaxTokens { get; set; } = 256;

    /// <summary>
    /// A prompt longer than the model's context times this many characters (or times the tokenizer's
    /// <see cref="Engine.Tokenization.TextTokenizer.MaxCharactersPerToken"/>, when that is fewer) is refused before it
    /// is tokenized (400, <c>context_length_exceeded</c>). Text averages about 4 characters a token; only a prompt
    /// made mostly of very long tokens (runs of spaces, say) could fit its context with more than 16.
    /// </summary>
    public int MaxPromptCharactersPerToken { get; set; } = 16;

    /// <summary>Threads for the kernels; 0 uses one per processor.</summary>
    public int Threads { get; set; }

    /// <summary>The engine: auto (the GPU with NVDEC restore when CUDA can be used, else the CPU), cpu or cuda.</summary>
    public EngineKind Engine { get; set; } = EngineKind.Auto;

    /// <summary>Throws <see cref="ArgumentException"/> with one line naming the first problem.</summary>
    public void Validate()
    {
        CheckFields();
        _ = ParseLadder();
        _ = ParseStrategy(ReuseStrategy);
        _ = ParseFloor();
    }

    /// <summary>
    /// <c>ours</c>, <c>ours-layer</c> (ours with layer-wise overlap), <c>cake</c>, <c>fetch</c> (the waiting queue), or a
    /// strategy with its variant (<c>cake-raw</c>).
    /// </summary>
    public static PrefillStrategy ParseStrategy(string? text) => text switch
    {
        "ours" or "adaptive" => PrefillStrategy.Adaptive,
        "ours-layer" => PrefillStrategy.LayerSplit,
        "cake" => new PrefillStrategy(PrefillMode.Cake),
        "fetch" or "fetch-only" or "waiting-queue" => new PrefillStrategy(PrefillMode.FetchOnly),
        _ when text is not null && (text.StartsWith("cake-", StringComparison.Ordinal) || text.StartsWith("fetch-", StringComparison.Ordinal)) => PrefillStrategy.Parse(text),
        _ => throw new ArgumentException($"{nameof(ReuseStrategy)} '{text}': give ours, ours-layer, cake or fetch."),
    };

    /// <summary>
    /// Validates these options and maps them, once, into what each part of the engine reads: how the model is opened,
    /// how KV is reused (null when no store is used) and how the scheduler bounds its work. The ladder is parsed here
    /// and nowhere else.
    /// </summary>
    internal ServingSetup Map()
    {
        CheckFields();
        KvVariant[] ladder = ParseLadder();
        return new ServingSetup(
            new LocalEngineOptions
            {
                Kind = Engine,
                Threads = Threads,
                // Slices are at most this long: smaller per-session scratch.
                MaxStepTokens = Math.Min(512, PrefillStepTokens),
            },
            Reuse && Store is not null
                ? new ReuseOptions
                {
                    ChunkTokens = ChunkTokens,
                    TenantSalt = DefaultTenant,
                    Ladder = ladder,
                    Floor = ParseFloor(),
                    Profile = CalibrationProfileFile is { } profile ? CalibrationProfile.Load(profile) : null,
                    ChunkTimeout = FetchTimeout,
                    Authenticator = ChunkSecretFile is { } secret ? ChunkAuthenticator.FromSecretFile(secret) : null,
                    // A few chunks in flight per request: several requests fetch at once.
                    MaxBufferedBytes = 16L << 20,
                }
                : null,
            new EngineSchedulerOptions
            {
                MaxActiveSessions = MaxActiveSessions,
                MaxQueuedRequests = MaxQueuedRequests,
                PrefillStepTokens = PrefillStepTokens,
                ReuseStrategy = ParseStrategy(ReuseStrategy),
            });
    }

    private void CheckFields()
    {
        if (string.IsNullOrWhiteSpace(ModelDirectory))
        {
            throw new ArgumentException("The model directory is required.");
        }

        if (ModelId is not null && (ModelId.Length == 0 || ModelId.Length > 256))
        {
            throw new ArgumentException($"The model id must have 1 to 256 characters; got {ModelId.Length}.");
        }

        if (Reuse && Store is not null && string.IsNullOrWhiteSpace(Store))
        {
            throw new ArgumentException("The store location is empty.");
        }

        Check(ChunkTokens, 16, 8192, nameof(ChunkTokens));
        Check(MaxActiveSessions, 1, 4096, nameof(MaxActiveSessions));
        Check(MaxQueuedRequests, 0, 1 << 20, nameof(MaxQueuedRequests));
        Check(PrefillStepTokens, 1, 1 << 16, nameof(PrefillStepTokens));
        Check(DefaultMaxTokens, 1, 1 << 20, nameof(DefaultMaxTokens));
        Check(MaxPromptCharactersPerToken, 1, 1024, nameof(MaxPromptCharactersPerToken));
        Check(Threads, 0, 1024, nameof(Threads));
        if (FetchTimeout < TimeSpan.FromMilliseconds(1) || FetchTimeout > TimeSpan.FromMinutes(10))
        {
            throw new ArgumentException($"{nameof(FetchTimeout)} must be between 1 ms and 10 minutes; got {FetchTimeout}.");
        }

        if (DefaultTenant is null || DefaultTenant.Length > TenantSalts.MaxTenantLength)
        {
            throw new ArgumentException($"{nameof(DefaultTenant)} must have at most {TenantSalts.MaxTenantLength} characters.");
        }
    }

    private KvVariant[] ParseLadder()
    {
        try
        {
            KvVariant[] ladder = [.. (Variant ?? "").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(KvVariant.Parse)];
            if (ladder.Length == 0 || ladder.Length > 8 || ladder.Distinct().Count() != ladder.Length)
            {
                throw new ArgumentException("give 1 to 8 distinct variants, comma-separated.");
            }

            return ladder;
        }
        catch (ArgumentException ex)
        {
            throw new ArgumentException($"{nameof(Variant)} '{Variant}': {ex.Message}", ex);
        }
    }

    private AccuracyFloor ParseFloor()
    {
        try
        {
            return AccuracyFloor.Parse(Accuracy ?? "");
        }
        catch (ArgumentException ex)
        {
            throw new ArgumentException($"{nameof(Accuracy)} '{Accuracy}': {ex.Message}", ex);
        }
    }

    /// <summary>The id clients use: <see cref="ModelId"/> or the model directory's name.</summary>
    internal string ResolveModelId() =>
        ModelId ?? new DirectoryInfo(Path.GetFullPath(ModelDirectory).TrimEnd(Path.DirectorySeparatorChar)).Name;

    private static void Check(int value, int min, int max, string name)
    {
        if (value < min || value > max)
        {
            throw new ArgumentException($"{name} must be between {min} and {max}; got {value}.");
        }
    }
}

/// <summary>What each part of a <see cref="KvFetcherEngine"/> receives, mapped once from <see cref="KvFetcherOptions"/>.</summary>
/// <param name="Engine">How the model is opened.</param>
/// <param name="Reuse">How KV is looked up, fetched and stored; null when no store is used.</param>
/// <param name="Scheduler">How the engine loop bounds and slices its work.</param>
internal sealed record ServingSetup(LocalEngineOptions Engine, ReuseOptions? Reuse, EngineSchedulerOptions Scheduler);
