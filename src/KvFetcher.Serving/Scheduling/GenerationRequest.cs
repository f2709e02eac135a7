using KvFetcher.Fetch.Scheduling;

namespace KvFetcher.Serving.Scheduling;

/// <summary>One prompt to continue and how: what <see cref="EngineScheduler.Submit"/> takes.</summary>
public sealed record GenerationRequest
{
    /// <summary>The prompt's token ids (special tokens included).</summary>
    public required int[] Prompt { get; init; }

    /// <summary>The tenant salt of the prompt's chunk keys (see <see cref="TenantSalts"/>).</summary>
    public string TenantSalt { get; init; } = "";

    /// <summary>The tenant's name as the caller gave it (for logs; the salt above is what keys use).</summary>
    public string Tenant { get; init; } = "";

    /// <summary>The most tokens to generate (at least 1).</summary>
    public int MaxTokens { get; init; } = 16;

    /// <summary>0 = greedy.</summary>
    public float Temperature { get; init; }

    public float TopP { get; init; } = 1f;

    public int? Seed { get; init; }

    /// <summary>Generation ends before the first of these appears in the text (which then leaves it out).</summary>
    public IReadOnlyList<string> StopSequences { get; init; } = [];

    /// <summary>Whether text is published piece by piece on <see cref="Generation.Text"/> as it is generated.</summary>
    public bool Stream { get; init; }
}

/// <summary>Why generation ended: <c>stop</c> (end of sequence or a stop sequence) or <c>length</c> (the token limit).</summary>
public enum FinishReason
{
    Stop,
    Length,
}

/// <summary>How a request's prompt was obtained and how long each part of its time to first token took.</summary>
public sealed record PrefillInfo
{
    public int PromptTokens { get; init; }

    /// <summary>Prompt tokens whose KV came from the store.</summary>
    public int ReusedTokens { get; init; }

    /// <summary>Prompt tokens the engine computed.</summary>
    public int ComputedTokens => PromptTokens - ReusedTokens;

    /// <summary>Whether the store was asked for the prompt's prefix (reuse on and at least one full chunk before the last token).</summary>
    public bool LookedUp { get; init; }

    /// <summary>Chunks of the prompt found in the store.</summary>
    public int StoredChunks { get; init; }

    /// <summary>Stored chunks that could not be fetched and were computed instead (fallbacks to recompute).</summary>
    public int FailedChunks { get; init; }

    /// <summary>The store lookup failed (store down or slow): the whole prompt was computed.</summary>
    public bool LookupFailed { get; init; }

    public long BytesFetched { get; init; }

    /// <summary>
    /// How the stored prefix was split between the engine and the fetcher (computed and fetched chunks, where they met,
    /// the variants); null when nothing was looked up.
    /// </summary>
    public ReuseSplit? Reuse { get; init; }

    /// <summary>Waiting for a session (the engine was at <see cref="KvFetcherOptions.MaxActiveSessions"/>).</summary>
    public TimeSpan Queue { get; init; }

    /// <summary>Looking up and fetching the stored prefix, off the engine (the waiting queue).</summary>
    public TimeSpan Fetch { get; init; }

    /// <summary>From the KV being ready to the first token: the engine computing the rest, interleaved with other requests.</summary>
    public TimeSpan Prefill { get; init; }

    /// <summary>From submission to the first token (the sum of the parts above).</summary>
    public TimeSpan TimeToFirstToken { get; init; }

    /// <summary>Chunks restored per stored variant (e.g. raw: 3, video8: 9).</summary>
    public IReadOnlyDictionary<string, int> Variants { get; init; } = new Dictionary<string, int>();

    /// <summary>Stored chunks computed instead of restored, by reason (see <see cref="Fetch.Scheduling.RestoreReport.Fallbacks"/>).</summary>
    public IReadOnlyDictionary<string, int> Fallbacks { get; init; } = new Dictionary<string, int>();
}

/// <summary>A finished generation.</summary>
public sealed record GenerationResult
{
    public required string Text { get; init; }

    public FinishReason FinishReason { get; init; }

    /// <summary>Tokens sampled (an end-of-sequence token included).</summary>
    public int CompletionTokens { get; init; }

    public required PrefillInfo Prefill { get; init; }

    /// <summary>From submission to the last token.</summary>
    public TimeSpan Elapsed { get; init; }
}

/// <summary>The engine is at capacity (every session busy and the queue full): try again later (HTTP 429).</summary>
public sealed class EngineBusyException : Exception
{
    public EngineBusyException()
    {
    }

    public EngineBusyException(string message)
        : base(message)
    {
    }

    public EngineBusyException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
