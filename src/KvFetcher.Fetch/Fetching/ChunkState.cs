namespace KvFetcher.Fetch.Fetching;

/// <summary>Who owns a chunk of a request's stored prefix. Transitions are compare-and-swap, so exactly one party fills a chunk.</summary>
internal enum ChunkState
{
    /// <summary>Nobody has it yet.</summary>
    Pending,

    /// <summary>The engine is computing it.</summary>
    Computing,

    /// <summary>The fetcher is transferring or decoding it.</summary>
    Fetching,

    /// <summary>The fetcher is writing it into the KV cache (the engine waits for it).</summary>
    Restoring,

    /// <summary>Its KV is in the cache.</summary>
    Filled,

    /// <summary>Its fetch failed (miss, timeout, store error, corrupt data); the engine computes it.</summary>
    Failed,
}
