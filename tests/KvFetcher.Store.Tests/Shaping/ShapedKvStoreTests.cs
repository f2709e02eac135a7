using System.Buffers;
using KvFetcher.Store.Disk;
using KvFetcher.Store.Shaping;
using KvFetcher.Store.Tests.Disk;
using Microsoft.Extensions.Time.Testing;

namespace KvFetcher.Store.Tests.Shaping;

/// <summary>A shaped link in front of a real disk store.</summary>
public sealed class ShapedKvStoreTests
{
    /// <summary>Fake-clock steps: fine enough that a waiter woken up to a step late loses few tokens to the burst cap.</summary>
    private static readonly TimeSpan s_step = TimeSpan.FromMilliseconds(1);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task GetPutRange_ThroughTheShaper_BytesIntact()
    {
        using var directory = new TempStoreDirectory();
        await using var store = new ShapedKvStore(directory.Open(fsync: false), BandwidthSchedule.Parse("8Gbps"));
        ObjectKey key = TestObjects.KeyFor("shaped");
        byte[] container = TestObjects.Container(key, 3 << 20, 5);
        await store.PutAsync(key, container, Ct);

        var whole = new ArrayBufferWriter<byte>();
        Assert.Equal(new StoreRead(true, container.Length, container.Length), await store.GetAsync(key, whole, cancellationToken: Ct));
        Assert.Equal(container, whole.WrittenSpan.ToArray());

        var part = new ArrayBufferWriter<byte>();
        await store.GetAsync(key, part, new ByteRange(1000, 200_000), Ct);
        Assert.Equal(container.AsSpan(1000, 200_000), part.WrittenSpan);

        Assert.Equal(new[] { true }, await store.ExistsAsync([key], Ct));
        Assert.Equal(1, await store.LongestPrefixAsync([key], Ct));
        Assert.True(await store.DeleteAsync(key, Ct));
        Assert.Equal(StoreRead.Miss, await store.GetAsync(key, new ArrayBufferWriter<byte>(), cancellationToken: Ct));
        Assert.StartsWith("shaped(8Gbps):disk:", store.Description, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("100KB/s", 4.0)]
    [InlineData("100KB/s@1s,300KB/s@1s", 2.0)] // 100 KB in the first second, 300 KB in the next
    [InlineData("500KB/s@500ms,100KB/s@500ms", 1.2)] // 250 + 50 KB in the first period, the last 100 KB at 500 KB/s
    public async Task Get_400KB_FinishesWhenTheScheduleHasCarriedIt(string schedule, double expectedSeconds)
    {
        using var directory = new TempStoreDirectory();
        DiskKvStore disk = directory.Open(fsync: false);
        ObjectKey key = TestObjects.KeyFor("paced");
        byte[] container = TestObjects.Container(key, 400_000 - TestObjects.SizeOf(0), 1);
        await disk.PutAsync(key, container, Ct);

        var time = new FakeTimeProvider();
        await using var store = new ShapedKvStore(disk, BandwidthSchedule.Parse(schedule), time);
        var destination = new ArrayBufferWriter<byte>();
        Task<StoreRead> get = store.GetAsync(key, destination, cancellationToken: Ct).AsTask();
        TimeSpan elapsed = await TokenBucketTests.DriveAsync(time, store.Bucket, get, s_step);

        Assert.Equal(container, destination.WrittenSpan.ToArray());
        Assert.InRange(elapsed.TotalSeconds, expectedSeconds - 0.001, expectedSeconds + 0.05);
    }

    [Fact]
    public async Task Put_PacedBeforeItReachesTheStore()
    {
        using var directory = new TempStoreDirectory();
        DiskKvStore disk = directory.Open(fsync: false);
        var time = new FakeTimeProvider();
        await using var store = new ShapedKvStore(disk, BandwidthSchedule.Constant(100_000), time);
        ObjectKey key = TestObjects.KeyFor("uploaded");
        byte[] container = TestObjects.Container(key, 200_000 - TestObjects.SizeOf(0), 1);

        Task put = store.PutAsync(key, container, Ct).AsTask();
        await TokenBucketTests.DriveAsync(time, store.Bucket, Task.Delay(Timeout.Infinite, Ct), s_step, until: TimeSpan.FromSeconds(1.5));
        Assert.False(put.IsCompleted);
        Assert.Equal(new[] { false }, await disk.ExistsAsync([key], Ct)); // not there while the bytes are still "on the wire"

        TimeSpan rest = await TokenBucketTests.DriveAsync(time, store.Bucket, put, s_step);
        Assert.InRange(rest.TotalSeconds, 0.5 - 0.001, 0.55);
        Assert.Equal(new[] { true }, await disk.ExistsAsync([key], Ct));
    }

    [Fact]
    public async Task Get_ScheduleSwappedAtRunTime_NewRateApplies()
    {
        using var directory = new TempStoreDirectory();
        DiskKvStore disk = directory.Open(fsync: false);
        ObjectKey key = TestObjects.KeyFor("swapped");
        byte[] container = TestObjects.Container(key, 1_000_000 - TestObjects.SizeOf(0), 1);
        await disk.PutAsync(key, container, Ct);

        var time = new FakeTimeProvider();
        await using var store = new ShapedKvStore(disk, BandwidthSchedule.Constant(100_000), time); // 10 s at this rate
        Task<StoreRead> get = store.GetAsync(key, new ArrayBufferWriter<byte>(), cancellationToken: Ct).AsTask();
        await TokenBucketTests.DriveAsync(time, store.Bucket, Task.Delay(Timeout.Infinite, Ct), s_step, until: TimeSpan.FromSeconds(1));
        store.Schedule = BandwidthSchedule.Constant(90_000_000); // the remaining 900 KB take 10 ms, once the waiter looks again
        TimeSpan rest = await TokenBucketTests.DriveAsync(time, store.Bucket, get, s_step);
        Assert.True((await get).Found);
        Assert.InRange(rest.TotalSeconds, 0.01, 0.15); // up to 100 ms until the sleeping slice looks again
        Assert.Equal(360_000, store.Bucket.BurstBytes); // resized for the new rate (4 ms of it)
    }

    [Fact]
    public async Task Lookups_NotPaced_AnswerWithoutTheClockMoving()
    {
        using var directory = new TempStoreDirectory();
        var time = new FakeTimeProvider();
        await using var store = new ShapedKvStore(directory.Open(fsync: false), BandwidthSchedule.Constant(1), time);
        ObjectKey key = TestObjects.KeyFor("absent");
        Assert.Equal(new[] { false }, await store.ExistsAsync([key], Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(10), Ct));
        Assert.Equal(0, await store.LongestPrefixAsync([key], Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(10), Ct));
        Assert.False(await store.DeleteAsync(key, Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(10), Ct));
        Assert.Equal(StoreRead.Miss, await store.GetAsync(key, new ArrayBufferWriter<byte>(), cancellationToken: Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(10), Ct));
    }
}
