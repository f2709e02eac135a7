namespace KvFetcher.Store.Redis;

/// <summary>How <see cref="RedisKvStore"/> connects and lays objects out. Validated before it connects.</summary>
public sealed record RedisKvStoreOptions
{
    public const int MinPartSize = 64 * 1024;
    public const int MaxPartSize = 256 * 1024 * 1024;

    /// <summary>
    /// <c>host:port[,host:port…][,option=value…]</c> in StackExchange.Redis's syntax. Any one node of a Redis Cluster
    /// is enough: the cluster's other nodes and its slot map are discovered.
    /// </summary>
    public required string ConnectionString { get; init; }

    /// <summary>
    /// Prepended to every Redis key this store writes, so several stores (or tenants) can share a Redis. Printable
    /// ASCII without spaces or braces.
    /// </summary>
    public string KeyPrefix { get; init; } = "kvf:";

    /// <summary>How long an object lives after its put; null keeps it until deleted or evicted by Redis's maxmemory.</summary>
    public TimeSpan? TimeToLive { get; init; }

    /// <summary>
    /// Objects up to this size are stored inline in one key; larger ones are split into the fewest equal parts of at
    /// most this size, each its own key in the object's hash slot.
    /// </summary>
    public int PartSize { get; init; } = 1024 * 1024;

    /// <summary>
    /// Connections opened to every node; operations take turns. One connection carries one operation's commands in
    /// order, so concurrent large transfers queue behind each other on it: a few connections measured 2-3x the
    /// throughput of one with 8 or more concurrent clients of 1 MB parts.
    /// </summary>
    public int Connections { get; init; } = 4;

    /// <summary>How long connecting may take before a down Redis is reported.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>How long one Redis command may take before it fails with <see cref="KvStoreException"/>.</summary>
    public TimeSpan OperationTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long the parts of a put live before its manifest makes them permanent, so a writer that dies halfway
    /// leaves nothing behind for long. Must exceed the time one put takes.
    /// </summary>
    public TimeSpan PendingPartLifetime { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad option.</summary>
    public void Validate()
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(ConnectionString);
        ArgumentNullException.ThrowIfNull(KeyPrefix);
        foreach (char c in KeyPrefix)
        {
            if (c is <= ' ' or > '~' or '{' or '}')
            {
                throw new ArgumentException($"KeyPrefix '{KeyPrefix}' contains '{c}' (U+{(int)c:X4}); use printable ASCII without spaces or braces.", nameof(KeyPrefix));
            }
        }

        if (TimeToLive is { } ttl)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(ttl, TimeSpan.FromMilliseconds(1), nameof(TimeToLive));
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(PartSize, MinPartSize, nameof(PartSize));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(PartSize, MaxPartSize, nameof(PartSize));
        ArgumentOutOfRangeException.ThrowIfLessThan(Connections, 1, nameof(Connections));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(Connections, 64, nameof(Connections));
        ArgumentOutOfRangeException.ThrowIfLessThan(ConnectTimeout, TimeSpan.FromMilliseconds(1), nameof(ConnectTimeout));
        ArgumentOutOfRangeException.ThrowIfLessThan(OperationTimeout, TimeSpan.FromMilliseconds(1), nameof(OperationTimeout));
        ArgumentOutOfRangeException.ThrowIfLessThan(PendingPartLifetime, TimeSpan.FromSeconds(1), nameof(PendingPartLifetime));
    }
}
