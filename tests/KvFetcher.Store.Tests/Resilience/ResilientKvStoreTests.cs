using System.Buffers;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using KvFetcher.Store.Disk;
using KvFetcher.Store.Remote;
using KvFetcher.Store.Resilience;
using KvFetcher.Store.Tests.Redis;
using KvFetcher.Tests;

namespace KvFetcher.Store.Tests.Resilience;

/// <summary>
/// Stores that are down, silent or stalled, met through the real clients over loopback: every call ends within a bounded
/// time, and once the breaker is open calls fail at once instead of waiting.
/// </summary>
public sealed class ResilientKvStoreTests : IAsyncDisposable
{
    private static readonly ObjectKey s_key = ObjectKey.Parse("resilience-test.raw0");
    private readonly string _directory = Directory.CreateTempSubdirectory("kvf-resilience-").FullName;

    public ValueTask DisposeAsync()
    {
        Directory.Delete(_directory, recursive: true);
        return ValueTask.CompletedTask;
    }

    [Fact]
    public async Task ExistsAsync_SilentHttpStore_FailsWithinTheLookupDeadlineThenFailsFast()
    {
        await using var silent = new MisbehavingHttpServer(Misbehaviour.Silent);
        await using IKvStore store = await KvStores.OpenAsync(silent.Address.AbsoluteUri, token: "t", cancellationToken: TestContext.Current.CancellationToken);
        var clock = Stopwatch.StartNew();

        for (int i = 0; i < 2; i++)
        {
            await Assert.ThrowsAnyAsync<KvStoreException>(async () => await store.ExistsAsync([s_key], TestContext.Current.CancellationToken));
        }

        TimeSpan firstTwo = clock.Elapsed;
        await Assert.ThrowsAsync<KvStoreUnavailableException>(async () => await store.ExistsAsync([s_key], TestContext.Current.CancellationToken));

        // Before: each lookup waited out the client's 10 s request deadline three times (30 s).
        Assert.True(firstTwo < TimeSpan.FromSeconds(8), $"two lookups took {firstTwo}");
        Assert.Equal(CircuitState.Open, ((ResilientKvStore)store).Lookups.State);
    }

    [Fact]
    public async Task ExistsAsync_BreakOverOnASilentStore_ProbesInTheBackgroundWithoutDelayingTheCaller()
    {
        await using var silent = new MisbehavingHttpServer(Misbehaviour.Silent);
        await using var store = new ResilientKvStore(new HttpKvStore(new HttpKvStoreOptions { BaseAddress = silent.Address }));
        for (int i = 0; i < 2; i++)
        {
            await Assert.ThrowsAnyAsync<KvStoreException>(async () => await store.ExistsAsync([s_key], TestContext.Current.CancellationToken));
        }

        await Task.Delay(TimeSpan.FromSeconds(1.2), TestContext.Current.CancellationToken); // the first break is 1 s
        var clock = Stopwatch.StartNew();
        await Assert.ThrowsAsync<KvStoreUnavailableException>(async () => await store.ExistsAsync([s_key], TestContext.Current.CancellationToken));
        TimeSpan answered = clock.Elapsed;
        while (store.Lookups.TimesOpened < 2 && clock.Elapsed < TimeSpan.FromSeconds(20))
        {
            await Task.Delay(50, TestContext.Current.CancellationToken);
        }

        // The caller was not kept for the probe's 0.5 s deadline; the probe failed and reopened the breaker for longer.
        Assert.True(answered < TimeSpan.FromMilliseconds(400), $"the lookup took {answered}");
        Assert.Equal(2, store.Lookups.TimesOpened);
        Assert.True(store.Lookups.RetryIn > TimeSpan.FromSeconds(1));
    }

    [Fact]
    public async Task PutAsync_SilentHttpStore_BoundedThenFailsFast()
    {
        await using var silent = new MisbehavingHttpServer(Misbehaviour.Silent);
        await using IKvStore store = await KvStores.OpenAsync(silent.Address.AbsoluteUri, token: "t", cancellationToken: TestContext.Current.CancellationToken);
        byte[] container = TestObjects.Container(s_key, 4096, seed: 1);
        var clock = Stopwatch.StartNew();
        int unavailable = 0;

        for (int i = 0; i < 20; i++)
        {
            try
            {
                await store.PutAsync(s_key, container, TestContext.Current.CancellationToken);
            }
            catch (KvStoreUnavailableException)
            {
                unavailable++;
            }
            catch (KvStoreException)
            {
            }
        }

        // Before: every put waited 10 s (200 s); now two wait their 2 s deadline and the rest are refused at once.
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"20 puts took {clock.Elapsed}");
        Assert.Equal(18, unavailable);
    }

    [Fact]
    public async Task GetAsync_HttpStoreStallsMidBody_FailsAsAStallWithoutWaitingOutTheDeadline()
    {
        await using DiskKvStore disk = DiskKvStore.Open(new DiskKvStoreOptions { Directory = _directory, Fsync = false });
        await disk.PutAsync(s_key, TestObjects.Container(s_key, 1 << 20, seed: 2), TestContext.Current.CancellationToken);
        await using var stalling = new MisbehavingHttpServer(Misbehaviour.StallMidBody, disk);
        await using var http = new HttpKvStore(new HttpKvStoreOptions { BaseAddress = stalling.Address, RequestTimeout = TimeSpan.FromSeconds(60), IdleTimeout = TimeSpan.FromMilliseconds(500) });
        var clock = Stopwatch.StartNew();

        KvStoreException failure = await Assert.ThrowsAnyAsync<KvStoreException>(async () =>
            await http.GetAsync(s_key, new ArrayBufferWriter<byte>(), cancellationToken: TestContext.Current.CancellationToken));

        // Before: the 60 s request deadline, three times over.
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"the stalled get took {clock.Elapsed}");
        Assert.Contains("stalled", failure.Message, StringComparison.Ordinal);
        Assert.Equal(1, stalling.StalledGets); // a stall is not retried
    }

    [Fact]
    public async Task GetAsync_StoreAnswersLookupsButStallsBodies_ReadsFailFastWhileLookupsGoOn()
    {
        await using DiskKvStore disk = DiskKvStore.Open(new DiskKvStoreOptions { Directory = _directory, Fsync = false });
        await disk.PutAsync(s_key, TestObjects.Container(s_key, 1 << 20, seed: 4), TestContext.Current.CancellationToken);
        await using var stalling = new MisbehavingHttpServer(Misbehaviour.StallMidBody, disk);
        await using var store = new ResilientKvStore(new HttpKvStore(new HttpKvStoreOptions { BaseAddress = stalling.Address, IdleTimeout = TimeSpan.FromMilliseconds(200) }));

        for (int i = 0; i < 2; i++)
        {
            // A lookup between stalled reads answers, and must not make the reads look healthy.
            bool[] exists = await store.ExistsAsync([s_key], TestContext.Current.CancellationToken);
            Assert.True(exists[0]);
            await Assert.ThrowsAnyAsync<KvStoreException>(async () => await store.GetAsync(s_key, new ArrayBufferWriter<byte>(), cancellationToken: TestContext.Current.CancellationToken));
        }

        await Assert.ThrowsAsync<KvStoreUnavailableException>(async () => await store.GetAsync(s_key, new ArrayBufferWriter<byte>(), cancellationToken: TestContext.Current.CancellationToken));
        Assert.Equal(2, stalling.StalledGets);
        Assert.Equal(CircuitState.Closed, store.Lookups.State);
        Assert.Equal(CircuitState.Open, store.Reads.State);
    }

    [Fact]
    public async Task OpenAsync_HttpStoreRefusesConnections_ReturnsAStoreThatReportsItselfUnreachable()
    {
        int port = UnusedPort();
        await using IKvStore store = await KvStores.OpenAsync($"http://127.0.0.1:{port}", token: "t", cancellationToken: TestContext.Current.CancellationToken);

        string? problem = await KvStores.CheckAsync(store, TestContext.Current.CancellationToken);

        Assert.NotNull(problem);
        Assert.Contains($"127.0.0.1:{port}", problem, StringComparison.Ordinal);
    }

    [Fact]
    public async Task OpenAsync_RedisDown_ReturnsAnUnavailableStoreInsteadOfThrowing()
    {
        int port = UnusedPort();

        // Before: KvStoreException "Cannot connect" from OpenAsync, so demo/warm died and serve-llm refused to start.
        await using IKvStore store = await KvStores.OpenAsync($"redis://127.0.0.1:{port}", cancellationToken: TestContext.Current.CancellationToken);

        Assert.NotNull(await KvStores.CheckAsync(store, TestContext.Current.CancellationToken));
        await Assert.ThrowsAnyAsync<KvStoreException>(async () => await store.ExistsAsync([s_key], TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task OpenAsync_RedisComesUpAfterStart_ReuseResumes()
    {
        await using RedisDeployment redis = await RedisDeployment.StartSingleAsync(cancellationToken: TestContext.Current.CancellationToken);
        redis.Kill();
        await using IKvStore store = await KvStores.OpenAsync($"redis://{redis.ConnectionString}", cancellationToken: TestContext.Current.CancellationToken);
        Assert.NotNull(await KvStores.CheckAsync(store, TestContext.Current.CancellationToken));

        await redis.RestartAsync(TestContext.Current.CancellationToken);
        byte[] container = TestObjects.Container(s_key, 4096, seed: 3);
        var clock = Stopwatch.StartNew();
        bool stored = false;
        while (!stored && clock.Elapsed < TimeSpan.FromSeconds(30))
        {
            try
            {
                await store.PutAsync(s_key, container, TestContext.Current.CancellationToken);
                stored = true;
            }
            catch (KvStoreException)
            {
                await Task.Delay(100, TestContext.Current.CancellationToken);
            }
        }

        Assert.True(stored, "the store never came back");
        var read = new ArrayBufferWriter<byte>();
        Assert.True((await store.GetAsync(s_key, read, cancellationToken: TestContext.Current.CancellationToken)).Found);
        Assert.Equal(container, read.WrittenSpan.ToArray());
    }

    [Fact]
    public async Task RunAsync_CallerGivesUpAfterTheStallTimeout_CountsAsAFailure()
    {
        await using var silent = new MisbehavingHttpServer(Misbehaviour.Silent);
        await using var http = new HttpKvStore(new HttpKvStoreOptions { BaseAddress = silent.Address, RequestTimeout = TimeSpan.FromSeconds(60), IdleTimeout = TimeSpan.FromSeconds(60) });
        await using var store = new ResilientKvStore(http, new ResilientKvStoreOptions { StallTimeout = TimeSpan.FromMilliseconds(200) }, ownsInner: false);

        using (var quick = new CancellationTokenSource(TimeSpan.FromMilliseconds(20)))
        {
            await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await store.GetAsync(s_key, new ArrayBufferWriter<byte>(), cancellationToken: quick.Token));
        }

        Assert.Equal(0, store.Reads.ConsecutiveFailures); // given up early: says nothing about the store
        using (var patient = new CancellationTokenSource(TimeSpan.FromMilliseconds(400)))
        {
            await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await store.GetAsync(s_key, new ArrayBufferWriter<byte>(), cancellationToken: patient.Token));
        }

        Assert.Equal(1, store.Reads.ConsecutiveFailures);
    }

    private static int UnusedPort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }
}
