using KvFetcher.Fetch.Fetching;

namespace KvFetcher.Fetch.Scheduling;

/// <summary>What a prefill did and how long each part took.</summary>
public sealed record PrefillReport
{
    public required string Strategy { get; init; }

    public int PromptTokens { get; init; }

    /// <summary>Chunks of the prompt found in the store (the longest stored prefix).</summary>
    public int StoredChunks { get; init; }

    /// <summary>Chunks restored from the store.</summary>
    public int RestoredChunks { get; init; }

    /// <summary>Stored chunks whose fetch failed (miss, timeout, store error, corrupt data) and that were computed instead.</summary>
    public int FailedChunks { get; init; }

    /// <summary>
    /// Chunks the engine took back from the fetcher and computed because their fetch was slower than computing them
    /// (counted in <see cref="FailedChunks"/> too when the fetcher gave them up first).
    /// </summary>
    public int TakenBackChunks { get; init; }

    /// <summary>Tokens whose KV came from the store.</summary>
    public int ReusedTokens { get; init; }

    public int ComputedTokens { get; init; }

    public long BytesFetched { get; init; }

    /// <summary>
    /// The plan the strategy took, where it chooses one from the measured rates: ours-layer takes <c>ours</c> (ours' plan
    /// over the whole ladder) or <c>layer-split</c> (a chunk split by layers); ours reports <c>ours</c>; null otherwise.
    /// </summary>
    public string? Plan { get; init; }

    /// <summary>
    /// The chunk split by layers (ours-layer: the engine computed its lower <see cref="SplitLayers"/> layers and the
    /// fetcher restored the upper ones; it counts in <see cref="RestoredChunks"/>), or -1 when no chunk was.
    /// </summary>
    public int SplitChunk { get; init; } = -1;

    /// <summary>The lower layers the engine computed of <see cref="SplitChunk"/>; 0 when no chunk was split.</summary>
    public int SplitLayers { get; init; }

    /// <summary>The lookup failed (store down); everything was computed.</summary>
    public bool LookupFailed { get; init; }

    /// <summary>Time to first token: from the request to the first token's logits.</summary>
    public TimeSpan TimeToFirstToken { get; init; }

    /// <summary>The first token (greedy).</summary>
    public int FirstToken { get; init; }

    /// <summary>How many chunks each variant supplied.</summary>
    public IReadOnlyDictionary<string, int> Variants { get; init; } = new Dictionary<string, int>();

    /// <summary>
    /// Stored chunks whose fetch failed, by reason: <c>missing</c>, <c>corrupt</c>, <c>unauthentic</c>, <c>timed_out</c>,
    /// <c>store_error</c>, <c>restore_failed</c> (each also logged with its cause).
    /// </summary>
    public IReadOnlyDictionary<string, int> Fallbacks { get; init; } = new Dictionary<string, int>();

    public IReadOnlyList<StageSpan> Timeline { get; init; } = [];

    /// <summary>The summed duration of each stage (stages overlap, so these add up to more than the TTFT).</summary>
    public TimeSpan Total(PrefillStage stage) => TimeSpan.FromTicks(Timeline.Where(s => s.Stage == stage).Sum(s => s.Duration.Ticks));
}
