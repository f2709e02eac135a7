using System.Buffers;

namespace KvFetcher.Store.Shaping;

/// <summary>
/// Emulates a link of limited, possibly varying bandwidth in front of another store: the bytes of every get and put
/// pass through one <see cref="TokenBucket"/> in slices of <see cref="SliceBytes"/>, so a transfer of S bytes at rate R
/// takes about S/R and concurrent transfers share the rate. Lookups and deletes pass straight through. A get reads
/// from the inner store first and then paces the bytes it wrote, so it returns when the emulated link would have
/// delivered the last byte (on cancellation mid-pace the destination may already hold the object).
/// </summary>
public sealed class ShapedKvStore : IKvStore
{
    /// <summary>The pacing granularity: how finely concurrent transfers interleave.</summary>
    public const int SliceBytes = 64 << 10;

    /// <summary>The bucket holds this much time at the highest rate, so coarse timer wake-ups do not lower the rate.</summary>
    private static readonly TimeSpan s_burstTime = TimeSpan.FromMilliseconds(4);

    private readonly IKvStore _inner;
    private readonly bool _ownsInner;

    /// <param name="inner">The store behind the emulated link.</param>
    /// <param name="schedule">The link's rate over time, starting now.</param>
    /// <param name="timeProvider">The clock (tests pass a fake one).</param>
    /// <param name="ownsInner">Whether disposing this store disposes <paramref name="inner"/>.</param>
    public ShapedKvStore(IKvStore inner, BandwidthSchedule schedule, TimeProvider? timeProvider = null, bool ownsInner = true)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentNullException.ThrowIfNull(schedule);
        _inner = inner;
        _ownsInner = ownsInner;
        Bucket = new TokenBucket(schedule, BurstFor(schedule), timeProvider);
    }

    public string Description => $"shaped({Bucket.Schedule}):{_inner.Description}";

    /// <summary>The bucket every transfer goes through.</summary>
    public TokenBucket Bucket { get; }

    /// <summary>The link's schedule; setting it applies from now, to transfers in flight too (within 100 ms).</summary>
    public BandwidthSchedule Schedule
    {
        get => Bucket.Schedule;
        set
        {
            ArgumentNullException.ThrowIfNull(value);
            Bucket.BurstBytes = BurstFor(value);
            Bucket.Schedule = value;
        }
    }

    public async ValueTask PutAsync(ObjectKey key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        await PaceAsync(data.Length, cancellationToken);
        await _inner.PutAsync(key, data, cancellationToken);
    }

    public async ValueTask<StoreRead> GetAsync(ObjectKey key, IBufferWriter<byte> destination, ByteRange range = default, CancellationToken cancellationToken = default)
    {
        StoreRead read = await _inner.GetAsync(key, destination, range, cancellationToken);
        if (read.Found)
        {
            await PaceAsync(read.BytesWritten, cancellationToken);
        }

        return read;
    }

    public ValueTask<bool[]> ExistsAsync(IReadOnlyList<ObjectKey> keys, CancellationToken cancellationToken = default) =>
        _inner.ExistsAsync(keys, cancellationToken);

    public ValueTask<int> LongestPrefixAsync(IReadOnlyList<ObjectKey> chain, CancellationToken cancellationToken = default) =>
        _inner.LongestPrefixAsync(chain, cancellationToken);

    public ValueTask<bool> DeleteAsync(ObjectKey key, CancellationToken cancellationToken = default) =>
        _inner.DeleteAsync(key, cancellationToken);

    public ValueTask<StoreStats> GetStatsAsync(CancellationToken cancellationToken = default) =>
        _inner.GetStatsAsync(cancellationToken);

    public ValueTask DisposeAsync() => _ownsInner ? _inner.DisposeAsync() : ValueTask.CompletedTask;

    public override string ToString() => Description;

    private static long BurstFor(BandwidthSchedule schedule) =>
        Math.Max(SliceBytes, (long)(schedule.MaxBytesPerSecond * s_burstTime.TotalSeconds));

    private async ValueTask PaceAsync(long bytes, CancellationToken cancellationToken)
    {
        while (bytes > 0)
        {
            long slice = Math.Min(SliceBytes, bytes);
            await Bucket.WaitAsync(slice, cancellationToken);
            bytes -= slice;
        }
    }
}
