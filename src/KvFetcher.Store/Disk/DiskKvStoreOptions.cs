namespace KvFetcher.Store.Disk;

/// <summary>Options of a <see cref="DiskKvStore"/>.</summary>
public sealed record DiskKvStoreOptions
{
    /// <summary>The store's directory; created when missing. One store at a time may use it (a lock file enforces it).</summary>
    public required string Directory { get; init; }

    /// <summary>The most bytes of objects kept; least recently used objects are evicted to stay under it. Null = unbounded.</summary>
    public long? CapacityBytes { get; init; }

    /// <summary>
    /// Whether a put fsyncs the object's file and its directory before it returns, so an acknowledged object survives
    /// a power loss. Without it a put is still atomic (never torn) but may be lost on power loss.
    /// </summary>
    public bool Fsync { get; init; } = true;

    /// <summary>Throws <see cref="ArgumentException"/> naming the bad option.</summary>
    internal void Validate()
    {
        if (string.IsNullOrWhiteSpace(Directory))
        {
            throw new ArgumentException("DiskKvStoreOptions.Directory must name a directory.", nameof(Directory));
        }

        if (CapacityBytes is long capacity)
        {
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity, nameof(CapacityBytes));
        }
    }
}
