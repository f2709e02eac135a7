namespace KvFetcher.Fetch.Scheduling;

/// <summary>
/// Where a chunk of a request's stored prefix stands. Only <see cref="ChunkBoard"/> changes a chunk's state, and only
/// along these transitions (compare-and-swap, so exactly one party fills a chunk):
/// <code>
/// Pending   -> Fetching   the fetcher claims it
/// Pending   -> Failed     the fetcher finds the variant it would fetch is not stored
/// Pending   -> Computing  the engine computes it
/// Fetching  -> Restoring  transferred and decoded: the restore stage writes it into the cache
/// Fetching  -> Failed     miss, timeout, store error, corrupt data, or the fetcher stopped
/// Fetching  -> Computing  the engine takes it back (the fetch is slower than computing it)
/// Restoring -> Filled     restored
/// Restoring -> Failed     the restore into the cache failed
/// Failed    -> Computing  the engine computes what the fetcher could not deliver
/// Computing -> Filled     computed
/// </code>
/// </summary>
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
