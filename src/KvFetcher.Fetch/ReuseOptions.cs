using KvFetcher.Codecs.Containers;

namespace KvFetcher.Fetch;

/// <summary>How contexts are cut, stored and fetched.</summary>
public sealed record ReuseOptions
{
    /// <summary>Tokens per chunk (the unit of keys, storage and fetching).</summary>
    public int ChunkTokens { get; init; } = 256;

    /// <summary>Isolates tenants: the same tokens under another salt get other keys.</summary>
    public string TenantSalt { get; init; } = "";

    /// <summary>
    /// The variants every chunk is stored as. The adaptive fetcher picks one per chunk: the most accurate whose
    /// predicted time to first token is within <see cref="QualitySlack"/> of the fastest.
    /// </summary>
    public IReadOnlyList<KvVariant> Ladder { get; init; } = [KvVariant.Raw, KvVariant.Exact, KvVariant.Parse("video8"), KvVariant.Parse("video4")];

    /// <summary>How much predicted TTFT the adaptive fetcher gives up for a more accurate variant (0.05 = 5%).</summary>
    public double QualitySlack { get; init; } = 0.05;

    /// <summary>Only lossless variants may be fetched (reuse is then always bit-identical to a full prefill).</summary>
    public bool LosslessOnly { get; init; }

    /// <summary>A chunk's transfer that takes longer than this is abandoned and the chunk computed instead.</summary>
    public TimeSpan ChunkTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Concurrent transfers per request.</summary>
    public int TransfersInFlight { get; init; } = 2;

    /// <summary>Decode workers per request.</summary>
    public int DecodeWorkers { get; init; } = 1;

    /// <summary>Cap on the fetched and decoded bytes a request buffers (sets how many chunks are in flight).</summary>
    public long MaxBufferedBytes { get; init; } = 64L << 20;

    /// <summary>Chunks the background publisher encodes at once.</summary>
    public int PublishWorkers { get; init; } = 1;

    /// <summary>
    /// Treats the store as untrusted: chunks are sealed with a per-tenant MAC derived from a deployment secret, and a
    /// chunk whose tag does not verify (forged, another tenant's, another deployment's) is a miss. Null trusts the store.
    /// </summary>
    public ChunkAuthenticator? Authenticator { get; init; }

    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(ChunkTokens, 1);
        ArgumentNullException.ThrowIfNull(TenantSalt);
        ArgumentNullException.ThrowIfNull(Ladder);
        if (Ladder.Count == 0)
        {
            throw new ArgumentException("The ladder needs at least one variant.", nameof(Ladder));
        }

        ArgumentOutOfRangeException.ThrowIfNegative(QualitySlack);
        ArgumentOutOfRangeException.ThrowIfLessThan(TransfersInFlight, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(DecodeWorkers, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(PublishWorkers, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(ChunkTimeout, TimeSpan.FromMilliseconds(1));
    }

    /// <summary>The background publisher's put deadline, puts in flight and back-off from a failing store.</summary>
    public Publishing.KvPublisherOptions Publishing { get; init; } = new();
}
