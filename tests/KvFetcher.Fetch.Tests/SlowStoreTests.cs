using System.Diagnostics;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Store;
using KvFetcher.Store.Disk;
using KvFetcher.Store.Remote;
using KvFetcher.Store.Resilience;
using KvFetcher.Tests;

namespace KvFetcher.Fetch.Tests;

/// <summary>
/// A store that stalls mid-body or never answers, met through the real HTTP client (<see cref="KvStores.OpenAsync(string, string?, long?, CancellationToken)"/>):
/// it may cost a bounded margin over computing, never its deadlines in full, and the answer is the full prefill's.
/// </summary>
public sealed class SlowStoreTests(ReuseFixture fixture) : IClassFixture<ReuseFixture>, IAsyncDisposable
{
    private static readonly KvVariant[] s_ladder = [KvVariant.Raw, KvVariant.Exact];
    private static readonly TimeSpan s_hangGuard = TimeSpan.FromSeconds(25);
    private static readonly TimeSpan s_patientLookup = TimeSpan.FromSeconds(5);
    private readonly string _directory = Directory.CreateTempSubdirectory("kvf-slow-").FullName;
    private DiskKvStore? _disk;

    public async ValueTask DisposeAsync()
    {
        if (_disk is not null)
        {
            await _disk.DisposeAsync();
        }

        Directory.Delete(_directory, recursive: true);
    }

    [Fact]
    public async Task Prefill_StoreStallsMidBody_TakesTheChunksBackInsteadOfWaitingOutTheDeadline()
    {
        await using var stalling = new MisbehavingHttpServer(Misbehaviour.StallMidBody, await WarmDiskAsync());
        await using IKvStore store = StalledStore(stalling);
        // A chunk deadline far longer than the hang guard: only giving up early can pass.
        await using var reuse = new KvReuse(fixture.Model, store, new ReuseOptions { Ladder = s_ladder, ChunkTimeout = TimeSpan.FromSeconds(120), LookupTimeout = s_patientLookup });
        var session = fixture.Model.CreateSession(ReuseFixture.PromptTokens);
        var logits = new float[fixture.Model.Config.VocabSize];
        var clock = Stopwatch.StartNew();

        PrefillReport report = await reuse.PrefillAsync(session, fixture.Tokens, PrefillStrategy.Adaptive, logits, publish: false, TestContext.Current.CancellationToken)
            .WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.Equal(4, report.StoredChunks);
        Assert.Equal(0, report.RestoredChunks);
        Assert.True(report.TakenBackChunks + report.FailedChunks > 0); // taken back by the engine, or failed as stalls
        Assert.Equal(fixture.FullLogits, logits);
        Assert.Equal(fixture.FullKv, ReuseFixture.Export(session));
        Assert.True(clock.Elapsed < s_hangGuard);
    }

    [Fact]
    public async Task FetchPrefix_StoreStallsMidBody_WaitEndsAtTheComputeDeadline()
    {
        await using var stalling = new MisbehavingHttpServer(Misbehaviour.StallMidBody, await WarmDiskAsync());
        await using IKvStore store = StalledStore(stalling);
        await using var reuse = new KvReuse(fixture.Model, store, new ReuseOptions { Ladder = s_ladder, ChunkTimeout = TimeSpan.FromSeconds(120), LookupTimeout = s_patientLookup });
        var session = fixture.Model.CreateSession(ReuseFixture.PromptTokens);

        RestoreReport report = await reuse.FetchPrefixAsync(session, reuse.Plan(fixture.Tokens), s_ladder, TestContext.Current.CancellationToken)
            .WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.Equal(4, report.StoredChunks);
        Assert.Equal(0, report.ReusedTokens);
        Assert.True(report.DeadlineReached || report.FailedChunks == 4);
    }

    [Fact]
    public async Task Prefill_SilentStore_LookupGivesUpAtItsDeadlineAndEverythingIsComputed()
    {
        await using var silent = new MisbehavingHttpServer(Misbehaviour.Silent);
        await using IKvStore store = await KvStores.OpenAsync(silent.Address.AbsoluteUri, token: "t", cancellationToken: TestContext.Current.CancellationToken);
        await using var reuse = new KvReuse(fixture.Model, store, new ReuseOptions { Ladder = s_ladder, ChunkTimeout = TimeSpan.FromSeconds(120) });
        var session = fixture.Model.CreateSession(ReuseFixture.PromptTokens);
        var logits = new float[fixture.Model.Config.VocabSize];

        // Before: the lookup waited out the chunk deadline (here 120 s).
        PrefillReport report = await reuse.PrefillAsync(session, fixture.Tokens, PrefillStrategy.Adaptive, logits, publish: false, TestContext.Current.CancellationToken)
            .WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.True(report.LookupFailed);
        Assert.Equal(fixture.FullLogits, logits);
    }

    [Fact]
    public async Task Warm_SilentStore_EndsInBoundedTimeWithEveryPutFailed()
    {
        await using var silent = new MisbehavingHttpServer(Misbehaviour.Silent);
        await using IKvStore store = await KvStores.OpenAsync(silent.Address.AbsoluteUri, token: "t", cancellationToken: TestContext.Current.CancellationToken);
        await using var reuse = new KvReuse(fixture.Model, store, new ReuseOptions { Ladder = s_ladder });

        // Before: 8 puts one after another, each waiting out the client's 10 s deadline.
        PrefillReport report = await reuse.WarmAsync(fixture.Tokens, TestContext.Current.CancellationToken).WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.True(report.LookupFailed);
        Assert.Equal(0, reuse.Publisher.Published);
        Assert.Equal(4 * s_ladder.Length, reuse.Publisher.Failed);
    }

    /// <summary>
    /// The real HTTP client behind the breaker, as <see cref="KvStores.OpenAsync(string, string?, long?, CancellationToken)"/> builds it, except for a patient lookup:
    /// these tests are about stalled transfers, and a lookup must not miss its deadline on a loaded test machine.
    /// </summary>
    private static ResilientKvStore StalledStore(MisbehavingHttpServer server) =>
        new(new HttpKvStore(new HttpKvStoreOptions { BaseAddress = server.Address, Token = "t" }), new ResilientKvStoreOptions { LookupTimeout = s_patientLookup });

    /// <summary>The prompt's chunks, every ladder variant, in a disk store the misbehaving server serves from.</summary>
    private async Task<DiskKvStore> WarmDiskAsync()
    {
        _disk = DiskKvStore.Open(new DiskKvStoreOptions { Directory = _directory, Fsync = false });
        await using var writer = new KvReuse(fixture.Model, _disk, new ReuseOptions { Ladder = s_ladder });
        await writer.WarmAsync(fixture.Tokens, TestContext.Current.CancellationToken);
        return _disk;
    }
}
