using KvFetcher.Fetch.Fetching;

namespace KvFetcher.Fetch.Scheduling;

/// <summary>
/// What a reuse request's prefill did so far: how its stored prefix was split between the engine and the fetcher, where
/// the two met, and which variants the fetcher restored.
/// </summary>
public sealed record ReuseSplit
{
    /// <summary>The strategy that split the work (<c>fetch-…</c>, <c>cake-…</c>, <c>ours</c>, <c>ours-layer</c>).</summary>
    public required string Strategy { get; init; }

    /// <summary>Chunks of the prompt found in the store (the longest stored prefix).</summary>
    public int StoredChunks { get; init; }

    /// <summary>Stored chunks the engine computed (its side of the meeting, and what the fetcher could not deliver).</summary>
    public int ComputedChunks { get; init; }

    /// <summary>Stored chunks the fetcher restored.</summary>
    public int FetchedChunks { get; init; }

    /// <summary>Stored chunks whose fetch failed (miss, timeout, corrupt, store error) and that were computed instead.</summary>
    public int FailedChunks { get; init; }

    /// <summary>Chunks the engine took back from a fetch slower than predicted.</summary>
    public int TakenBackChunks { get; init; }

    /// <summary>The first stored chunk the fetcher restored (the engine computed the ones before it); <see cref="StoredChunks"/> when none.</summary>
    public int MeetingChunk { get; init; }

    /// <summary>
    /// The plan the strategy took, where it chooses one from the measured rates: ours-layer takes <c>ours</c> (ours' plan
    /// over the whole ladder) or <c>layer-split</c> (a chunk split by layers); ours reports <c>ours</c>; null otherwise.
    /// </summary>
    public string? Plan { get; init; }

    /// <summary>
    /// The chunk split by layers (ours-layer: the engine computed its lower <see cref="SplitLayers"/> layers and the
    /// fetcher restored the upper ones; it counts in <see cref="FetchedChunks"/>), or -1 when no chunk was.
    /// </summary>
    public int SplitChunk { get; init; } = -1;

    /// <summary>The lower layers the engine computed of <see cref="SplitChunk"/>; 0 when no chunk was split.</summary>
    public int SplitLayers { get; init; }

    /// <summary>Chunks restored per variant name.</summary>
    public IReadOnlyDictionary<string, int> Variants { get; init; } = new Dictionary<string, int>();

    public long BytesFetched { get; init; }

    /// <summary>Some chunk came from a lossy variant: the KV after it is not a full prefill's.</summary>
    public bool RestoredLossy { get; init; }

    /// <summary>The store lookup failed (down or slow): everything is computed.</summary>
    public bool LookupFailed { get; init; }
}

/// <summary>
/// One reuse request's prefill taken step by step by an engine loop that serves many requests (continuous batching): the
/// fetcher fills the back of the stored prefix off the engine while the loop computes the front in
/// <see cref="NextStep"/>-sized steps between other requests' steps, meeting where the strategy decides. Start it with
/// <see cref="KvReuse.BeginPrefillAsync"/>; the wake action given there is called whenever the fetcher changes something
/// the engine may be waiting for. Only the engine's thread calls <see cref="NextStep"/> and <see cref="Computed"/>. Dispose
/// it (after the first token, or when the request ends) before the session: it stops the fetcher.
/// </summary>
public sealed class ReusePrefill : IAsyncDisposable
{
    private readonly PrefillRun _run;
    private readonly PrefillStrategy _strategy;
    private readonly KvReuse _reuse;
    private int _disposed;

    internal ReusePrefill(PrefillRun run, PrefillStrategy strategy, KvReuse reuse)
    {
        _run = run;
        _strategy = strategy;
        _reuse = reuse;
    }

    /// <summary>Chunks of the prompt found in the store.</summary>
    public int StoredChunks => _run.Stored;

    /// <inheritdoc cref="PrefillRun.InSuffix"/>
    public bool InSuffix => _run.InSuffix;

    /// <inheritdoc cref="PrefillRun.NextPosition"/>
    public int NextPosition => _run.NextPosition;

    /// <inheritdoc cref="PrefillRun.NextStep"/>
    public EngineStep NextStep(int maxTokens) => _run.NextStep(maxTokens);

    /// <inheritdoc cref="PrefillRun.Computed"/>
    public void Computed(EngineStep step, TimeSpan elapsed) => _run.Computed(step, elapsed);

    /// <summary>
    /// Stores what this request computed, off the response path (see <see cref="KvReuse.Publisher"/>): once the prompt is
    /// done, before the cache moves on. Nothing from the first chunk restored from a lossy variant on. Returns the chunks
    /// queued for storing.
    /// </summary>
    public int Publish() => _run.Publish(_reuse.Publisher);

    /// <summary>How the stored prefix was split so far (final once the prompt is done).</summary>
    public ReuseSplit Split()
    {
        int stored = _run.Stored;
        var variants = new Dictionary<string, int>();
        for (int chunk = 0; chunk < stored; chunk++)
        {
            if (_run.OutcomeOf(chunk) is (KvVariant variant, FetchOutcome.Restored))
            {
                string name = variant.ToString();
                variants[name] = variants.GetValueOrDefault(name) + 1;
            }
        }

        return new ReuseSplit
        {
            Strategy = _strategy.ToString(),
            StoredChunks = stored,
            ComputedChunks = _run.ComputedChunks,
            FetchedChunks = _run.RestoredChunks,
            FailedChunks = _run.FailedChunks,
            TakenBackChunks = _run.TakenBackChunks,
            MeetingChunk = stored == 0 ? 0 : _run.MeetingChunk(),
            Plan = _run.Plan,
            SplitChunk = _run.SplitChunk,
            SplitLayers = _run.SplitLayers,
            Variants = variants,
            BytesFetched = _run.BytesFetched,
            RestoredLossy = stored > 0 && _run.FirstLossyRestore() < stored,
            LookupFailed = _run.LookupFailed,
        };
    }

    /// <summary>Stops the fetcher (transfers in flight are cancelled); the session may be disposed afterwards.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            await _run.DisposeAsync().ConfigureAwait(false);
        }
    }
}
