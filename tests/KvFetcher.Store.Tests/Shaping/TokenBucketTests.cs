using System.Diagnostics;
using KvFetcher.Store.Shaping;
using Microsoft.Extensions.Time.Testing;

namespace KvFetcher.Store.Tests.Shaping;

public sealed class TokenBucketTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public void TryTake_NewBucket_StartsEmptyAndWaitsBytesOverRate()
    {
        var time = new FakeTimeProvider();
        var bucket = new TokenBucket(1000, burstBytes: 1000, time);
        Assert.False(bucket.TryTake(500, out TimeSpan wait));
        Assert.Equal(TimeSpan.FromMilliseconds(500), wait);

        time.Advance(TimeSpan.FromMilliseconds(499));
        Assert.False(bucket.TryTake(500, out wait));
        Assert.Equal(TimeSpan.FromMilliseconds(1), wait);
        time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.True(bucket.TryTake(500, out _));
        Assert.Equal(0, bucket.AvailableBytes, 6);
    }

    [Fact]
    public void AvailableBytes_LongIdle_CappedAtBurst()
    {
        var time = new FakeTimeProvider();
        var bucket = new TokenBucket(1000, burstBytes: 300, time);
        time.Advance(TimeSpan.FromSeconds(10));
        Assert.Equal(300, bucket.AvailableBytes, 6);
    }

    [Fact]
    public void TryTake_MoreThanBurst_TakesAFullBucketAndRepaysTheDebt()
    {
        var time = new FakeTimeProvider();
        var bucket = new TokenBucket(1000, burstBytes: 1000, time);
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(bucket.TryTake(5000, out _));
        Assert.Equal(-4000, bucket.AvailableBytes, 6);
        Assert.False(bucket.TryTake(100, out TimeSpan wait));
        Assert.Equal(TimeSpan.FromSeconds(4.1), wait);
    }

    [Fact]
    public async Task WaitAsync_CompletesOnlyOnceTheClockHasEarnedTheBytes()
    {
        var time = new FakeTimeProvider();
        var bucket = new TokenBucket(1000, burstBytes: 1000, time);
        Task wait = bucket.WaitAsync(50, Ct).AsTask();
        time.Advance(TimeSpan.FromMilliseconds(49));
        await Task.Delay(50, Ct); // real time passes; the fake clock does not
        Assert.False(wait.IsCompleted);
        time.Advance(TimeSpan.FromMilliseconds(1));
        await wait.WaitAsync(TimeSpan.FromSeconds(10), Ct);
    }

    [Fact]
    public async Task BytesPerSecond_RaisedWhileWaiting_TheWaitEndsEarly()
    {
        var time = new FakeTimeProvider();
        var bucket = new TokenBucket(100, burstBytes: 1000, time);
        Task wait = bucket.WaitAsync(1000, Ct).AsTask(); // 10 s at 100 B/s
        TimeSpan first = await DriveAsync(time, bucket, Task.Delay(Timeout.Infinite, Ct), TimeSpan.FromMilliseconds(10), until: TimeSpan.FromSeconds(1));
        Assert.Equal(TimeSpan.FromSeconds(1), first);
        Assert.False(wait.IsCompleted);

        bucket.BytesPerSecond = 10_000; // 100 bytes earned; 900 more take 90 ms now
        Assert.Equal(10_000, bucket.BytesPerSecond);
        TimeSpan rest = await DriveAsync(time, bucket, wait, TimeSpan.FromMilliseconds(10));
        Assert.InRange(rest.TotalMilliseconds, 90, 110); // within the longest sleep (100 ms) of the change
    }

    [Fact]
    public async Task WaitAsync_Cancelled_ThrowsOperationCanceled()
    {
        var time = new FakeTimeProvider();
        var bucket = new TokenBucket(1, burstBytes: 10, time);
        using var cancel = new CancellationTokenSource();
        Task wait = bucket.WaitAsync(10, cancel.Token).AsTask();
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => wait.WaitAsync(TimeSpan.FromSeconds(10), Ct));
        Assert.Equal(0, bucket.Waiters);
    }

    [Fact]
    public async Task WaitAsync_TwoWaiters_ShareTheRate()
    {
        var time = new FakeTimeProvider();
        var bucket = new TokenBucket(1000, burstBytes: 500, time);
        Task both = Task.WhenAll(bucket.WaitAsync(500, Ct).AsTask(), bucket.WaitAsync(500, Ct).AsTask());
        TimeSpan elapsed = await DriveAsync(time, bucket, both, TimeSpan.FromMilliseconds(10));
        Assert.InRange(elapsed.TotalMilliseconds, 1000, 1020);
    }

    /// <summary>
    /// Advances the fake clock in <paramref name="step"/>s, only while someone waits on the bucket, until
    /// <paramref name="work"/> finishes (or <paramref name="until"/> has passed); returns the fake time that passed.
    /// </summary>
    internal static async Task<TimeSpan> DriveAsync(FakeTimeProvider time, TokenBucket bucket, Task work, TimeSpan step, TimeSpan? until = null)
    {
        DateTimeOffset start = time.GetUtcNow();
        var guard = Stopwatch.StartNew();
        while (!work.IsCompleted && (until is null || time.GetUtcNow() - start < until))
        {
            Assert.True(guard.Elapsed < TimeSpan.FromSeconds(30), "the work never finished");
            if (bucket.Waiters > 0)
            {
                time.Advance(step);
            }
            else
            {
                await Task.Delay(1, TestContext.Current.CancellationToken); // let the work reach its next wait
            }
        }

        if (until is null)
        {
            await work;
        }

        return time.GetUtcNow() - start;
    }
}
