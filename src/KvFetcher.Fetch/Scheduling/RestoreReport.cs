using KvFetcher.Fetch.Fetching;

namespace KvFetcher.Fetch.Scheduling;

/// <summary>What a fetch of a request's stored prefix did, off the engine (see <see cref="KvReuse.FetchPrefixAsync(Engine.IInferenceSession, ContextPlan, IReadOnlyList{KvVariant}, CancellationToken)"/>).</summary>
public sealed record RestoreReport
{
    public int PromptTokens { get; init; }

    /// <summary>Chunks of the prompt found in the store (the longest stored prefix).</summary>
    public int StoredChunks { get; init; }

    /// <summary>Chunks restored into the cache.</summary>
    public int RestoredChunks { get; init; }

    /// <summary>Stored chunks whose fetch failed (miss, timeout, store error, corrupt data); the engine computes them.</summary>
    public int FailedChunks { get; init; }

    /// <summary>Positions [0, ReusedTokens) are filled: the cache's contiguous prefix, where the engine continues.</summary>
    public int ReusedTokens { get; init; }

    public long BytesFetched { get; init; }

    /// <summary>The lookup failed (store down or too slow); nothing was fetched.</summary>
    public bool LookupFailed { get; init; }

    /// <summary>
    /// Whether a chunk was restored from a lossy variant: KV computed after it differs from a full prefill's, so the
    /// caller must not publish it (it would be stored under names that promise exact KV).
    /// </summary>
    public bool RestoredLossy { get; init; }

    /// <summary>
    /// The wait reached its deadline (<see cref="ReuseOptions.PrefixWaitFactor"/> times the predicted compute time of the
    /// prefix) and stopped; what was restored by then is kept.
    /// </summary>
    public bool DeadlineReached { get; init; }

    /// <summary>
    /// Chunks whose fetched variant arrived intact but failed its MAC (forged, another tenant's, or sealed under a
    /// retired secret): the caller replaces that variant once it has computed the chunk.
    /// </summary>
    public IReadOnlyDictionary<int, KvVariant> UnauthenticChunks { get; init; } = new Dictionary<int, KvVariant>();

    /// <summary>
    /// Stored chunks whose fetch failed, by reason: <c>missing</c>, <c>corrupt</c>, <c>unauthentic</c>, <c>timed_out</c>,
    /// <c>store_error</c>, <c>restore_failed</c> (each also logged with its cause).
    /// </summary>
    public IReadOnlyDictionary<string, int> Fallbacks { get; init; } = new Dictionary<string, int>();

    /// <summary>From the call to the restored prefix (lookup, transfer, decode and restore).</summary>
    public TimeSpan Elapsed { get; init; }

    public IReadOnlyList<StageSpan> Timeline { get; init; } = [];

    /// <summary>Chunks restored per variant (e.g. raw: 3, video8: 9).</summary>
    public IReadOnlyDictionary<string, int> Variants =>
        Timeline.Where(s => s.Stage == PrefillStage.Restore && s.Variant is not null).GroupBy(s => s.Variant!).ToDictionary(g => g.Key, g => g.Count());

    /// <summary>The summed duration of each stage (stages overlap, so these add up to more than <see cref="Elapsed"/>).</summary>
    public TimeSpan Total(PrefillStage stage) => TimeSpan.FromTicks(Timeline.Where(s => s.Stage == stage).Sum(s => s.Duration.Ticks));
}
