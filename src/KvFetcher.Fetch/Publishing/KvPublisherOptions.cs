namespace KvFetcher.Fetch.Publishing;

/// <summary>How patient the background publisher is with its store.</summary>
public sealed record KvPublisherOptions
{
    /// <summary>The deadline of one container's put; a put that takes longer is abandoned and counted as failed.</summary>
    public TimeSpan PutTimeout { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>Puts one worker has in flight at once (the variants of a chunk go to the store concurrently).</summary>
    public int PutsInFlight { get; init; } = 4;

    /// <summary>Consecutive failed puts after which the publisher stops putting for <see cref="BackOff"/>.</summary>
    public int FailuresBeforeBackOff { get; init; } = 3;

    /// <summary>
    /// How long a failing store is left alone: chunks queued meanwhile are skipped (counted). The first chunk after it
    /// is a probe: one more failure backs off again.
    /// </summary>
    public TimeSpan BackOff { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad field.</summary>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(PutTimeout, TimeSpan.FromMilliseconds(1));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(PutTimeout, TimeSpan.FromHours(1));
        ArgumentOutOfRangeException.ThrowIfLessThan(PutsInFlight, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(FailuresBeforeBackOff, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(BackOff, TimeSpan.Zero);
    }
}
