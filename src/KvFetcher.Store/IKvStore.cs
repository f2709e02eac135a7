using System.Buffers;

namespace KvFetcher.Store;

/// <summary>
/// A store of KV chunk containers (<see cref="KvFetcher.Core.Containers.ChunkContainer"/>), addressed by
/// <see cref="ObjectKey"/>. Every implementation keeps these rules:
/// <list type="bullet">
/// <item>A put is all or nothing: a reader sees the whole object or none of it, never a torn one. A put of bytes that
/// are not an intact container is refused with <see cref="ArgumentException"/>.</item>
/// <item>Every get verifies the container's checksum; an object that fails is removed and reported as a miss. A get
/// never hands out bytes it has not verified.</item>
/// <item>A store that is down, slow or failing raises <see cref="KvStoreException"/> (or
/// <see cref="OperationCanceledException"/> on cancellation), never anything else, so a caller can fall back to
/// recomputing.</item>
/// </list>
/// </summary>
public interface IKvStore : IAsyncDisposable
{
    /// <summary>What this store is, for logs: <c>disk:/var/kv</c>, <c>http://host:port</c>, <c>redis:…</c>.</summary>
    string Description { get; }

    /// <summary>Stores (or replaces) an object. Throws <see cref="KvStoreFullException"/> when it cannot fit.</summary>
    ValueTask PutAsync(ObjectKey key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default);

    /// <summary>
    /// Reads an object (or <paramref name="range"/> of it) into <paramref name="destination"/>. Returns
    /// <see cref="StoreRead.Miss"/> when the object is absent or failed verification; on a miss nothing is written.
    /// </summary>
    ValueTask<StoreRead> GetAsync(ObjectKey key, IBufferWriter<byte> destination, ByteRange range = default, CancellationToken cancellationToken = default);

    /// <summary>Whether each key is stored, in one round trip.</summary>
    ValueTask<bool[]> ExistsAsync(IReadOnlyList<ObjectKey> keys, CancellationToken cancellationToken = default);

    /// <summary>
    /// How many leading keys of <paramref name="chain"/> are all stored (the longest stored prefix of a context's
    /// chunk chain), in one round trip.
    /// </summary>
    ValueTask<int> LongestPrefixAsync(IReadOnlyList<ObjectKey> chain, CancellationToken cancellationToken = default);

    /// <summary>Removes an object; false when it was not there.</summary>
    ValueTask<bool> DeleteAsync(ObjectKey key, CancellationToken cancellationToken = default);

    /// <summary>Usage and counters.</summary>
    ValueTask<StoreStats> GetStatsAsync(CancellationToken cancellationToken = default);
}

/// <summary>
/// A byte range of an object: <see cref="Offset"/> and <see cref="Length"/> (null = to the end). The default is the whole
/// object.
/// </summary>
public readonly record struct ByteRange(long Offset, long? Length)
{
    public static ByteRange All => default;

    public bool IsAll => Offset == 0 && Length is null;

    /// <summary>The [start, end) of this range in an object of <paramref name="objectLength"/> bytes, or false when it lies outside.</summary>
    public bool TryResolve(long objectLength, out long start, out long count)
    {
        start = Offset;
        count = Length ?? (objectLength - Offset);
        return Offset >= 0 && count >= 0 && Offset <= objectLength && count <= objectLength - Offset;
    }
}

/// <summary>The outcome of a get: found or not, the whole object's length and the bytes written.</summary>
public readonly record struct StoreRead(bool Found, long ObjectLength, long BytesWritten)
{
    public static StoreRead Miss => default;
}

/// <summary>A store's usage and counters since it started.</summary>
public sealed record StoreStats
{
    public long Objects { get; init; }
    public long UsedBytes { get; init; }

    /// <summary>The capacity cap; null when unbounded.</summary>
    public long? CapacityBytes { get; init; }

    public long Hits { get; init; }
    public long Misses { get; init; }
    public long BytesIn { get; init; }
    public long BytesOut { get; init; }
    public long Evictions { get; init; }

    /// <summary>Objects that failed verification on read and were removed.</summary>
    public long CorruptObjects { get; init; }
}
