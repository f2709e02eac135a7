namespace KvFetcher.Store.Resilience;

/// <summary>How patient a <see cref="ResilientKvStore"/> is and when it stops asking its store.</summary>
public sealed record ResilientKvStoreOptions
{
    /// <summary>When the store counts as unavailable, and for how long.</summary>
    public CircuitBreakerOptions Breaker { get; init; } = new();

    /// <summary>
    /// The deadline of a lookup (exists, longest prefix): one small round trip that every prefill waits for, so it is
    /// short. A lookup that misses it is a failure.
    /// </summary>
    public TimeSpan LookupTimeout { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>The deadline of a put, delete or stats call. One that misses it is a failure.</summary>
    public TimeSpan OperationTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// A call its caller gave up on after waiting at least this long without an answer counts as a stall (a failure):
    /// the fetcher abandons transfers that are slower than computing, and that is the store's doing. A call given up
    /// sooner says nothing about the store.
    /// </summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad option.</summary>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(Breaker);
        Breaker.Validate();
        ArgumentOutOfRangeException.ThrowIfLessThan(LookupTimeout, TimeSpan.FromMilliseconds(1), nameof(LookupTimeout));
        ArgumentOutOfRangeException.ThrowIfLessThan(OperationTimeout, TimeSpan.FromMilliseconds(1), nameof(OperationTimeout));
        ArgumentOutOfRangeException.ThrowIfLessThan(StallTimeout, TimeSpan.FromMilliseconds(1), nameof(StallTimeout));
    }
}
