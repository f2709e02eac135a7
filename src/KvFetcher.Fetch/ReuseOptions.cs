using KvFetcher.Core.Containers;
using KvFetcher.Fetch.Calibration;

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

    /// <summary>Only lossless variants may be fetched (reuse is then always bit-identical to a full prefill); the same as <see cref="Floor"/> = <see cref="AccuracyFloor.Lossless"/>.</summary>
    public bool LosslessOnly { get; init; }

    /// <summary>
    /// The accuracy a lossy variant must have shown on this model (its <see cref="CalibrationProfile"/>) for ours and the
    /// server's waiting queue to fetch it: by default top-1 agreement &gt;= 99% and perplexity change &lt;= 1%. Without a
    /// trusted profile only lossless variants pass. A strategy naming one variant (fetch-video8, cake-video8) fetches it
    /// whatever the floor: that is the caller's choice, not ours.
    /// </summary>
    public AccuracyFloor Floor { get; init; } = AccuracyFloor.Default;

    /// <summary>
    /// The model's calibration profile; null reads <c>kvfetcher-profile.json</c> from the model's directory (when there
    /// is one). Either way it is trusted only if its fingerprint is the model's.
    /// </summary>
    public CalibrationProfile? Profile { get; init; }

    /// <summary>
    /// The most a chunk's transfer may take before it is abandoned and the chunk computed instead, whatever the
    /// strategy. Strategies that can compute give up much sooner: the engine takes a chunk back once it has waited as
    /// long as computing it takes, and a stalled store fails its transfers by itself (no bytes for its idle timeout).
    /// </summary>
    public TimeSpan ChunkTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The deadline of the lookup every prefill starts with; a store that misses it is treated as down.</summary>
    public TimeSpan LookupTimeout { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>
    /// How long a request waiting off the engine (<see cref="KvReuse.FetchPrefixAsync(Engine.IInferenceSession, ContextPlan, IReadOnlyList{KvVariant}, CancellationToken)"/>)
    /// waits for its prefix, as a multiple of the predicted time to compute that prefix (at least a quarter second):
    /// when it is over, the chunks restored so far are kept and the engine computes the rest. Above 1, the waiting
    /// queue accepts a fetch slower than computing, to spare a busy engine.
    /// </summary>
    public double PrefixWaitFactor { get; init; } = 1.0;

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

    /// <summary>
    /// Layers per group of the layer-addressable containers that variants of raw and exact are stored as (version 2 of
    /// the container, <see cref="ChunkLayerTable"/>): a fetcher can then read and verify a group of layers of a chunk
    /// without the rest (<c>ours-layer</c> fetches the upper layers of the chunk where the engine and the fetcher meet).
    /// 0 writes plain (version 1) containers, which readers before version 2 also read.
    /// </summary>
    public int LayerGroup { get; init; } = 1;

    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(ChunkTokens, 1);
        ArgumentNullException.ThrowIfNull(TenantSalt);
        ArgumentNullException.ThrowIfNull(Ladder);
        ArgumentNullException.ThrowIfNull(Floor);
        if (Ladder.Count == 0)
        {
            throw new ArgumentException("The ladder needs at least one variant.", nameof(Ladder));
        }

        ArgumentOutOfRangeException.ThrowIfNegative(QualitySlack);
        ArgumentOutOfRangeException.ThrowIfLessThan(TransfersInFlight, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(DecodeWorkers, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(PublishWorkers, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(LayerGroup);
        ArgumentOutOfRangeException.ThrowIfLessThan(ChunkTimeout, TimeSpan.FromMilliseconds(1));
        ArgumentOutOfRangeException.ThrowIfLessThan(LookupTimeout, TimeSpan.FromMilliseconds(1));
        if (!(PrefixWaitFactor > 0) || double.IsInfinity(PrefixWaitFactor))
        {
            throw new ArgumentOutOfRangeException(nameof(PrefixWaitFactor), PrefixWaitFactor, "The prefix wait factor must be a positive finite number.");
        }
    }

    /// <summary>What the fetch pipeline reads.</summary>
    internal Fetching.FetcherOptions Fetcher => new(TransfersInFlight, DecodeWorkers, ChunkTimeout, MaxBufferedBytes);

    /// <summary>The floor in force: <see cref="AccuracyFloor.Lossless"/> with <see cref="LosslessOnly"/>, else <see cref="Floor"/>.</summary>
    internal AccuracyFloor EffectiveFloor => LosslessOnly ? AccuracyFloor.Lossless : Floor;

    /// <summary>The lookup's deadline: <see cref="LookupTimeout"/>, or <see cref="ChunkTimeout"/> when that is shorter.</summary>
    internal TimeSpan LookupDeadline => LookupTimeout < ChunkTimeout ? LookupTimeout : ChunkTimeout;

    /// <summary>The background publisher's put deadline, puts in flight and back-off from a failing store.</summary>
    public Publishing.KvPublisherOptions Publishing { get; init; } = new();
}
