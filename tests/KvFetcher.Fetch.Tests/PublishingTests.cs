using System.Buffers;
using System.Net;
using System.Net.Sockets;
using KvFetcher.Codecs;
using KvFetcher.Fetch.Publishing;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Store;
using KvFetcher.Store.Disk;
using KvFetcher.Store.Remote;

namespace KvFetcher.Fetch.Tests;

/// <summary>
/// Publishing after a prefill: a publisher that survives any failed job and never waits without end, puts that go out
/// concurrently with a deadline, nothing stored on top of lossy KV, and a chunk stored again only as the variant that
/// went missing.
/// </summary>
public sealed class PublishingTests(ReuseFixture fixture) : IClassFixture<ReuseFixture>, IAsyncDisposable
{
    private static readonly KvVariant[] s_ladder = [KvVariant.Raw, KvVariant.Exact, KvVariant.Parse("video8"), KvVariant.Parse("cachegen0")];
    private static readonly TimeSpan s_hangGuard = TimeSpan.FromSeconds(60);
    private readonly string _directory = Directory.CreateTempSubdirectory("kvf-publish-").FullName;
    private readonly List<IAsyncDisposable> _owned = [];

    public async ValueTask DisposeAsync()
    {
        for (int i = _owned.Count - 1; i >= 0; i--)
        {
            await _owned[i].DisposeAsync();
        }

        Directory.Delete(_directory, recursive: true);
    }

    [Fact]
    public async Task Publisher_StoreThrowsAnUnexpectedException_WorkerSurvivesAndStoresTheRest()
    {
        // A store breaking its contract (an exception that is not a KvStoreException) on one container: before, the only
        // worker died there and WhenIdleAsync never completed (kvfetch demo/warm hung).
        DiskKvStore disk = OpenDisk();
        await using var reuse = new KvReuse(fixture.Model, disk, new ReuseOptions { Ladder = s_ladder });
        ContextPlan plan = reuse.Plan(fixture.Tokens);
        ObjectKey poisoned = plan.ObjectKeyOf(0, KvVariant.Raw);
        var store = new FaultyStore(disk) { FailPut = key => key == poisoned ? new InvalidOperationException("unexpected store fault") : null };
        await using var publisher = new KvPublisher(store, s_ladder);
        for (int chunk = 0; chunk < plan.ReusableChunks; chunk++)
        {
            Assert.True(publisher.TryEnqueue(plan, chunk, Slice(fixture.FullKv, chunk, plan)));
        }

        await publisher.WhenIdleAsync().WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.Equal((plan.ReusableChunks * s_ladder.Length) - 1, publisher.Published);
        Assert.Equal(1, publisher.Failed);
        Assert.Equal(1, publisher.FailuresOf(KvVariant.Raw));
        Assert.Contains("unexpected store fault", publisher.LastError, StringComparison.Ordinal);
        ObjectKey[] others = [.. Enumerable.Range(0, plan.ReusableChunks).SelectMany(c => s_ladder.Select(v => plan.ObjectKeyOf(c, v))).Where(k => k != poisoned)];
        Assert.All(await disk.ExistsAsync(others, TestContext.Current.CancellationToken), Assert.True);
    }

    [Fact]
    public async Task Warm_SilentStore_ReturnsWithEveryContainerCounted()
    {
        // A store that accepts connections and never answers, through the real HTTP client with its default patience
        // (10 s per request): before, every put waited in turn (576 s for the demo document).
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        var accepted = new List<Socket>();
        Task accepting = AcceptForeverAsync(silent, accepted);
        await using var store = new HttpKvStore(new HttpKvStoreOptions { BaseAddress = new Uri($"http://127.0.0.1:{((IPEndPoint)silent.LocalEndpoint).Port}"), Token = "t" });
        var options = new ReuseOptions { Ladder = s_ladder, ChunkTimeout = TimeSpan.FromSeconds(1), Publishing = new KvPublisherOptions { PutTimeout = TimeSpan.FromSeconds(1) } };
        await using var reuse = new KvReuse(fixture.Model, store, options);

        PrefillReport report = await reuse.WarmAsync(fixture.Tokens, TestContext.Current.CancellationToken).WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.True(report.LookupFailed);
        Assert.Equal(0, reuse.Publisher.Published);
        Assert.Equal(4 * s_ladder.Length, reuse.Publisher.Failed);
        Assert.True(reuse.Publisher.Skipped > 0); // the store was left alone after the first chunk's puts failed
        Assert.True(reuse.Publisher.BackingOff);
        Assert.Contains("no answer within 1 s", reuse.Publisher.LastError, StringComparison.Ordinal);
        silent.Stop();
        await accepting;
        accepted.ForEach(s => s.Dispose());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public async Task Publisher_ChunkVariants_PutConcurrentlyUpToTheBound(int putsInFlight)
    {
        DiskKvStore disk = OpenDisk();
        var store = new FaultyStore(disk) { PutDelay = TimeSpan.FromMilliseconds(500) };
        await using var reuse = new KvReuse(fixture.Model, disk, new ReuseOptions { Ladder = s_ladder });
        ContextPlan plan = reuse.Plan(fixture.Tokens);
        await using var publisher = new KvPublisher(store, s_ladder, options: new KvPublisherOptions { PutsInFlight = putsInFlight });

        Assert.True(publisher.TryEnqueue(plan, 0, Slice(fixture.FullKv, 0, plan)));
        await publisher.WhenIdleAsync().WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.Equal(s_ladder.Length, publisher.Published);
        Assert.Equal(Math.Min(putsInFlight, 2), Math.Min(store.PeakPuts, 2)); // the variants overlap in the store...
        Assert.InRange(store.PeakPuts, 1, putsInFlight);                        // ...never more than the bound
    }

    [Theory]
    [InlineData("video4")]
    [InlineData("cachegen2")]
    public async Task Prefill_AfterALossyPrefix_PublishesNothingComputedOnIt(string lossy)
    {
        KvVariant variant = KvVariant.Parse(lossy);
        await using KvReuse reuse = await WarmPrefixAsync([KvVariant.Raw, variant]);
        long before = reuse.Publisher.Published;
        ContextPlan plan = reuse.Plan(fixture.Tokens);

        PrefillReport report = await PrefillAsync(reuse, PrefillStrategy.FetchOnly(variant));
        await reuse.Publisher.WhenIdleAsync().WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.Equal(2, report.RestoredChunks);
        Assert.Equal(before, reuse.Publisher.Published);
        ObjectKey[] computed = [.. new[] { 2, 3 }.SelectMany(c => new[] { KvVariant.Raw, variant }.Select(v => plan.ObjectKeyOf(c, v)))];
        Assert.All(await reuse.Store.ExistsAsync(computed, TestContext.Current.CancellationToken), Assert.False);

        // The serving path's fetch says so too, so its publishing holds back the same way (one variant named: fetched
        // whatever the accuracy floor, as fetch-VARIANT is).
        RestoreReport restore = await reuse.FetchPrefixAsync(fixture.Model.CreateSession(ReuseFixture.PromptTokens), plan, variant, TestContext.Current.CancellationToken);
        Assert.True(restore.RestoredLossy);
    }

    [Fact]
    public async Task Prefill_AfterALosslessPrefix_PublishesTheComputedChunksBitIdentical()
    {
        await using KvReuse reuse = await WarmPrefixAsync([KvVariant.Raw, KvVariant.Parse("video4")]);
        ContextPlan plan = reuse.Plan(fixture.Tokens);

        PrefillReport report = await PrefillAsync(reuse, PrefillStrategy.FetchOnly(KvVariant.Raw));
        await reuse.Publisher.WhenIdleAsync().WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.Equal(2, report.RestoredChunks);
        for (int chunk = 2; chunk < 4; chunk++)
        {
            Assert.Equal(Slice(fixture.FullKv, chunk, plan), await DecodeStoredAsync(reuse.Store, plan, chunk, KvVariant.Raw));
        }

        RestoreReport restore = await reuse.FetchPrefixAsync(fixture.Model.CreateSession(ReuseFixture.PromptTokens), plan, [KvVariant.Raw], TestContext.Current.CancellationToken);
        Assert.False(restore.RestoredLossy);
    }

    [Fact]
    public async Task Prefill_ObjectGoneSinceLookup_StoresOnlyThatVariantAgain()
    {
        DiskKvStore disk = OpenDisk();
        await using (var warm = new KvReuse(fixture.Model, disk, new ReuseOptions { Ladder = s_ladder }))
        {
            await warm.WarmAsync(fixture.Tokens, TestContext.Current.CancellationToken);
        }

        // Evicted between the lookup and the fetch (the store deletes it as the get arrives).
        ObjectKey evicted = default;
        var store = new FaultyStore(disk) { BeforeGet = key => key == evicted ? disk.DeleteAsync(key).AsTask() : Task.CompletedTask };
        await using var reuse = new KvReuse(fixture.Model, store, new ReuseOptions { Ladder = s_ladder });
        ContextPlan plan = reuse.Plan(fixture.Tokens);
        evicted = plan.ObjectKeyOf(1, KvVariant.Raw);

        PrefillReport report = await PrefillAsync(reuse, PrefillStrategy.FetchOnly(KvVariant.Raw));
        await reuse.Publisher.WhenIdleAsync().WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.Equal(1, report.FailedChunks);
        Assert.Equal(1, reuse.Publisher.Published); // raw of chunk 1, not its four variants
        Assert.Equal(Slice(fixture.FullKv, 1, plan), await DecodeStoredAsync(disk, plan, 1, KvVariant.Raw));
    }

    [Fact]
    public async Task Prefill_BitFlippedInTransit_RewritesNothing()
    {
        // The chunks live in a real store server; one bit of one answer is flipped on the way (a proxy in between). The
        // client refuses that container and computes the chunk, but the stored copy is fine: nothing is written.
        DiskKvStore disk = OpenDisk();
        await using (var warm = new KvReuse(fixture.Model, disk, new ReuseOptions { Ladder = s_ladder }))
        {
            await warm.WarmAsync(fixture.Tokens, TestContext.Current.CancellationToken);
        }

        await disk.DisposeAsync(); // releases the directory for the server
        _owned.Remove(disk);
        const string Token = "a-test-token-of-32-characters!!";
        var server = await KvFetcher.Server.StoreServer.StartAsync(
            new KvFetcher.Server.StoreServerOptions { DataDirectory = _directory, Token = Token, Urls = ["http://127.0.0.1:0"] }, TestContext.Current.CancellationToken);
        _owned.Add(server);
        var proxy = new FlippingProxy(server.Addresses[0], flipAt: 50_000);
        _owned.Add(proxy);
        var store = new HttpKvStore(new HttpKvStoreOptions { BaseAddress = proxy.Address, Token = Token, MaxRetries = 0 });
        _owned.Add(store);
        // A patient lookup: this is about the transfer (a first HTTP lookup on a loaded CI machine can take over the 0.5 s default).
        await using var reuse = new KvReuse(fixture.Model, store, new ReuseOptions { Ladder = s_ladder, LookupTimeout = TimeSpan.FromSeconds(10) });

        PrefillReport report = await PrefillAsync(reuse, PrefillStrategy.FetchOnly(KvVariant.Raw));
        await reuse.Publisher.WhenIdleAsync().WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.False(report.LookupFailed);
        Assert.True(proxy.Flipped);
        Assert.Equal(1, report.FailedChunks);
        Assert.Equal(3, report.RestoredChunks);
        Assert.Equal(0, reuse.Publisher.Published);
        ContextPlan plan = reuse.Plan(fixture.Tokens);
        ObjectKey[] all = [.. Enumerable.Range(0, 4).SelectMany(c => s_ladder.Select(v => plan.ObjectKeyOf(c, v)))];
        Assert.All(await store.ExistsAsync(all, TestContext.Current.CancellationToken), Assert.True);
    }

    private DiskKvStore OpenDisk()
    {
        DiskKvStore store = DiskKvStore.Open(new DiskKvStoreOptions { Directory = _directory, Fsync = false });
        _owned.Add(store);
        return store;
    }

    /// <summary>A reuse over a fresh disk store holding the prompt's first two chunks as <paramref name="ladder"/>.</summary>
    private async Task<KvReuse> WarmPrefixAsync(KvVariant[] ladder)
    {
        var reuse = new KvReuse(fixture.Model, OpenDisk(), new ReuseOptions { Ladder = ladder });
        PrefillReport warm = await reuse.WarmAsync(fixture.Tokens[..600], TestContext.Current.CancellationToken);
        Assert.Equal(0, warm.StoredChunks);
        Assert.Equal(2 * ladder.Length, reuse.Publisher.Published);
        return reuse;
    }

    private async Task<PrefillReport> PrefillAsync(KvReuse reuse, PrefillStrategy strategy)
    {
        using var session = fixture.Model.CreateSession(ReuseFixture.PromptTokens);
        var logits = new float[fixture.Model.Config.VocabSize];
        return await reuse.PrefillAsync(session, fixture.Tokens, strategy, logits, publish: true, TestContext.Current.CancellationToken);
    }

    private static async Task AcceptForeverAsync(TcpListener listener, List<Socket> accepted)
    {
        try
        {
            while (true)
            {
                accepted.Add(await listener.AcceptSocketAsync());
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or InvalidOperationException)
        {
        }
    }

    private static async Task<byte[]> DecodeStoredAsync(IKvStore store, ContextPlan plan, int chunk, KvVariant variant)
    {
        var container = new ArrayBufferWriter<byte>();
        Assert.True((await store.GetAsync(plan.ObjectKeyOf(chunk, variant), container, cancellationToken: TestContext.Current.CancellationToken)).Found);
        var decoded = new byte[plan.ChunkBytes];
        variant.GetCodec().DecodeContainer(container.WrittenSpan, plan.Expectation(chunk), decoded);
        return decoded;
    }

    /// <summary>Chunk <paramref name="chunk"/> of the full prefill's KV (over all the fixture's tokens) in the wire layout.</summary>
    private static byte[] Slice(byte[] kv, int chunk, ContextPlan plan)
    {
        int rowBytes = plan.ChunkShape.KvHeads * plan.ChunkShape.HeadDim * 2;
        var result = new byte[plan.ChunkBytes];
        int offset = 0;
        for (int slab = 0; slab < plan.ChunkShape.Layers * 2; slab++)
        {
            int source = ((slab * ReuseFixture.PromptTokens) + (chunk * plan.ChunkTokens)) * rowBytes;
            kv.AsSpan(source, plan.ChunkTokens * rowBytes).CopyTo(result.AsSpan(offset));
            offset += plan.ChunkTokens * rowBytes;
        }

        return result;
    }

    /// <summary>A store in front of another that can fail, slow down or act before chosen calls, and counts concurrent puts.</summary>
    private sealed class FaultyStore(IKvStore inner) : IKvStore
    {
        private int _puts;
        private int _peak;

        public Func<ObjectKey, Exception?> FailPut { get; init; } = _ => null;

        public Func<ObjectKey, Task> BeforeGet { get; init; } = _ => Task.CompletedTask;

        public TimeSpan PutDelay { get; init; }

        public int PeakPuts => Volatile.Read(ref _peak);

        public string Description => "faulty:" + inner.Description;

        public async ValueTask PutAsync(ObjectKey key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
        {
            int now = Interlocked.Increment(ref _puts);
            InterlockedMax(ref _peak, now);
            try
            {
                if (FailPut(key) is { } fault)
                {
                    throw fault;
                }

                await Task.Delay(PutDelay, cancellationToken);
                await inner.PutAsync(key, data, cancellationToken);
            }
            finally
            {
                Interlocked.Decrement(ref _puts);
            }
        }

        public async ValueTask<StoreRead> GetAsync(ObjectKey key, IBufferWriter<byte> destination, ByteRange range = default, CancellationToken cancellationToken = default)
        {
            await BeforeGet(key);
            return await inner.GetAsync(key, destination, range, cancellationToken);
        }

        public ValueTask<bool[]> ExistsAsync(IReadOnlyList<ObjectKey> keys, CancellationToken cancellationToken = default) => inner.ExistsAsync(keys, cancellationToken);

        public ValueTask<int> LongestPrefixAsync(IReadOnlyList<ObjectKey> chain, CancellationToken cancellationToken = default) => inner.LongestPrefixAsync(chain, cancellationToken);

        public ValueTask<bool> DeleteAsync(ObjectKey key, CancellationToken cancellationToken = default) => inner.DeleteAsync(key, cancellationToken);

        public ValueTask<StoreStats> GetStatsAsync(CancellationToken cancellationToken = default) => inner.GetStatsAsync(cancellationToken);

        public ValueTask DisposeAsync() => ValueTask.CompletedTask; // the inner store is the test's

        private static void InterlockedMax(ref int target, int value)
        {
            int seen = Volatile.Read(ref target);
            while (value > seen && Interlocked.CompareExchange(ref target, value, seen) is int current && current != seen)
            {
                seen = current;
            }
        }
    }

    /// <summary>A loopback TCP proxy that flips one bit of the server's answers, at byte <c>flipAt</c> of everything it relays back.</summary>
    private sealed class FlippingProxy : IAsyncDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly Uri _target;
        private readonly long _flipAt;
        private readonly List<Task> _pipes = [];
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _accepting;
        private long _relayed;
        private int _flipped;

        public FlippingProxy(Uri target, long flipAt)
        {
            _target = target;
            _flipAt = flipAt;
            _listener.Start();
            _accepting = AcceptAsync();
        }

        public Uri Address => new($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}");

        public bool Flipped => Volatile.Read(ref _flipped) != 0;

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Stop();
            await _accepting;
            Task[] pipes;
            lock (_pipes)
            {
                pipes = [.. _pipes];
            }

            await Task.WhenAll(pipes).WaitAsync(TimeSpan.FromSeconds(10));

            _stop.Dispose();
        }

        private async Task AcceptAsync()
        {
            try
            {
                while (true)
                {
                    Socket client = await _listener.AcceptSocketAsync(_stop.Token);
                    var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    await server.ConnectAsync(_target.Host, _target.Port, _stop.Token);
                    lock (_pipes)
                    {
                        _pipes.Add(PipeAsync(client, server, flip: false));
                        _pipes.Add(PipeAsync(server, client, flip: true));
                    }
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
            }
        }

        private async Task PipeAsync(Socket from, Socket to, bool flip)
        {
            var buffer = new byte[16384];
            try
            {
                while (true)
                {
                    int n = await from.ReceiveAsync(buffer, SocketFlags.None, _stop.Token);
                    if (n == 0)
                    {
                        break;
                    }

                    if (flip)
                    {
                        long end = Interlocked.Add(ref _relayed, n);
                        long start = end - n;
                        if (start <= _flipAt && _flipAt < end && Interlocked.Exchange(ref _flipped, 1) == 0)
                        {
                            buffer[(int)(_flipAt - start)] ^= 0x10;
                        }
                    }

                    await to.SendAsync(buffer.AsMemory(0, n), SocketFlags.None, _stop.Token);
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
            }
            finally
            {
                to.Dispose();
                from.Dispose();
            }
        }
    }
}
