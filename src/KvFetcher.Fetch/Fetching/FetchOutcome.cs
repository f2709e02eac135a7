namespace KvFetcher.Fetch.Fetching;

/// <summary>
/// What became of one chunk's fetch (<see cref="ChunkFetcher.OutcomeOf"/>): publishing stores a chunk again only after a
/// miss, and never builds on KV restored from a lossy variant as if it were exact.
/// </summary>
internal enum FetchOutcome
{
    /// <summary>The fetcher never transferred it (the engine computed it, or its variant was not stored).</summary>
    None,

    /// <summary>Restored into the cache.</summary>
    Restored,

    /// <summary>The store no longer had it (evicted, or found corrupt and removed by the store since the lookup).</summary>
    Missing,

    /// <summary>It arrived but failed verification (checksum, identity or codec): evidence about the transfer, not the stored copy.</summary>
    Corrupt,

    /// <summary>
    /// It arrived intact but its MAC did not verify (forged, another tenant's, or sealed under another secret): the stored
    /// copy itself is wrong, so it is replaced.
    /// </summary>
    Unauthentic,

    /// <summary>No answer within the chunk deadline, or the request ended first.</summary>
    TimedOut,

    /// <summary>The store failed (network, server error).</summary>
    StoreError,

    /// <summary>The decoder or the restore into the cache failed.</summary>
    RestoreFailed,
}
