using System.Buffers;
using KvFetcher.Core;
using KvFetcher.Core.Keys;
using KvFetcher.Engine;
using KvFetcher.Engine.Model;
using KvFetcher.Engine.Tokenization;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Serving.Scheduling;
using KvFetcher.Store;
using KvFetcher.Store.Disk;
using KvFetcher.Store.Shaping;

namespace KvFetcher.Serving.Tests.Scheduling;

/// <summary>
/// The engine loop's waiting queue: a request whose prefix is being fetched does not hold up requests without reuse, a
/// fetch that fails for any reason leaves the engine to compute the prompt, and every request completes.
/// </summary>
public sealed class WaitingQueueTests(ServingFixture fixture) : IClassFixture<ServingFixture>, IAsyncDisposable
{
    private static readonly TimeSpan s_hangGuard = TimeSpan.FromSeconds(60);
    private readonly string _directory = Directory.CreateTempSubdirectory("kvf-waiting-").FullName;
    private DiskKvStore? _disk;

    public async ValueTask DisposeAsync()
    {
        if (_disk is not null)
        {
            await _disk.DisposeAsync();
        }

        Directory.Delete(_directory, recursive: true);
    }

    [Theory]
    [InlineData(8)]
    [InlineData(1)]
    public async Task Submit_ReuseBehindSlowLinkThenPlainRequest_PlainOneFirstUnlessOneSession(int sessions)
    {
        int[] prompt = fixture.Model.Tokenizer.Encode(fixture.Document);
        await using ShapedKvStore slow = await SlowStoreAsync(prompt);
        // The fetch is slower than computing on purpose: the waiting queue is told to accept that.
        await using var reuse = new KvReuse(fixture.Model, slow, new ReuseOptions { Ladder = [KvVariant.Raw], PrefixWaitFactor = 100 });
        var waitingQueue = new EngineSchedulerOptions { MaxActiveSessions = sessions, ReuseStrategy = new PrefillStrategy(PrefillMode.FetchOnly) };
        await using var scheduler = new EngineScheduler(fixture.Model, reuse, waitingQueue, new ServingMetrics());
        int[] plain = prompt[300..500];

        Generation reusing = scheduler.Submit(new GenerationRequest { Prompt = prompt, MaxTokens = 1 }, TestContext.Current.CancellationToken);
        await Task.Delay(50, TestContext.Current.CancellationToken);
        Generation other = scheduler.Submit(new GenerationRequest { Prompt = plain, MaxTokens = 1 }, TestContext.Current.CancellationToken);
        Task first = await Task.WhenAny(reusing.Completion, other.Completion).WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);
        GenerationResult reused = await reusing.Completion;
        GenerationResult computed = await other.Completion;

        // With sessions to spare the plain request is computed while the other's prefix crosses the ~1 s link; with one
        // session it waits behind the fetch.
        Assert.Same(sessions > 1 ? other.Completion : reusing.Completion, first);
        Assert.Equal(reuse.Plan(prompt).ReusableChunks * 256, reused.Prefill.ReusedTokens);
        Assert.Equal(fixture.Greedy(prompt, 1), reused.Text);
        Assert.Equal(fixture.Greedy(plain, 1), computed.Text);
    }

    [Fact]
    public async Task Submit_EmptyPrompt_RefusedWithArgumentException()
    {
        await using var store = new BrokenStore();
        await using var reuse = new KvReuse(fixture.Model, store);
        await using var scheduler = new EngineScheduler(fixture.Model, reuse, new EngineSchedulerOptions(), new ServingMetrics());

        Assert.Throws<ArgumentException>(() => scheduler.Submit(new GenerationRequest { Prompt = [], MaxTokens = 1 }, TestContext.Current.CancellationToken));
        Assert.Equal(0, scheduler.ActiveSessions);
    }

    [Fact]
    public async Task Submit_StoreBreaksItsContract_ComputesTheWholePrompt()
    {
        int[] prompt = fixture.Model.Tokenizer.Encode(fixture.Document);
        await using var store = new BrokenStore();
        await using var reuse = new KvReuse(fixture.Model, store);
        await using var scheduler = new EngineScheduler(fixture.Model, reuse, new EngineSchedulerOptions(), new ServingMetrics());

        GenerationResult result = await scheduler.Submit(new GenerationRequest { Prompt = prompt, MaxTokens = 1 }, TestContext.Current.CancellationToken)
            .Completion.WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.Equal(0, result.Prefill.ReusedTokens);
        Assert.Equal(fixture.Greedy(prompt, 1), result.Text);
    }

    [Fact]
    public async Task Submit_SessionCannotBeCreated_FailsWithThatExceptionAndFreesItsPlace()
    {
        var model = new NoSessionModel(fixture.Model);
        await using var store = new BrokenStore();
        await using var reuse = new KvReuse(model, store);
        await using var scheduler = new EngineScheduler(model, reuse, new EngineSchedulerOptions { MaxActiveSessions = 1 }, new ServingMetrics());

        Generation request = scheduler.Submit(new GenerationRequest { Prompt = fixture.Model.Tokenizer.Encode(fixture.Document), MaxTokens = 1 }, TestContext.Current.CancellationToken);

        await Assert.ThrowsAsync<InsufficientMemoryException>(() => request.Completion.WaitAsync(s_hangGuard, TestContext.Current.CancellationToken));
        Assert.Equal(0, scheduler.ActiveSessions);
    }

    /// <summary>The prompt's chunks (raw) in a disk store behind a 2 MB/s link.</summary>
    private async Task<ShapedKvStore> SlowStoreAsync(int[] prompt)
    {
        _disk = DiskKvStore.Open(new DiskKvStoreOptions { Directory = _directory, Fsync = false });
        await using (var writer = new KvReuse(fixture.Model, _disk, new ReuseOptions { Ladder = [KvVariant.Raw] }))
        {
            await writer.WarmAsync(prompt, TestContext.Current.CancellationToken);
        }

        return new ShapedKvStore(_disk, BandwidthSchedule.Constant(2e6), ownsInner: false);
    }

    /// <summary>A store that breaks its contract: every call throws something other than <see cref="KvStoreException"/>.</summary>
    private sealed class BrokenStore : IKvStore
    {
        public string Description => "broken";

        public ValueTask PutAsync(ObjectKey key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default) => throw Broken();

        public ValueTask<StoreRead> GetAsync(ObjectKey key, IBufferWriter<byte> destination, ByteRange range = default, CancellationToken cancellationToken = default) => throw Broken();

        public ValueTask<bool[]> ExistsAsync(IReadOnlyList<ObjectKey> keys, CancellationToken cancellationToken = default) => throw Broken();

        public ValueTask<int> LongestPrefixAsync(IReadOnlyList<ObjectKey> chain, CancellationToken cancellationToken = default) => throw Broken();

        public ValueTask<bool> DeleteAsync(ObjectKey key, CancellationToken cancellationToken = default) => throw Broken();

        public ValueTask<StoreStats> GetStatsAsync(CancellationToken cancellationToken = default) => throw Broken();

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;

        private static InvalidOperationException Broken() => new("the store is broken");
    }

    /// <summary>The bundled model, except that no session can be created (as when device memory runs out).</summary>
    private sealed class NoSessionModel(IInferenceModel inner) : IInferenceModel
    {
        public ModelConfig Config => inner.Config;

        public TextTokenizer Tokenizer => inner.Tokenizer;

        public string Directory => inner.Directory;

        public ModelFingerprint Fingerprint => inner.Fingerprint;

        public DType KvStorageDType => inner.KvStorageDType;

        public string Device => inner.Device;

        public bool ComputesOnHostCores => inner.ComputesOnHostCores;

        public IInferenceSession CreateSession(int capacity = 0) => throw new InsufficientMemoryException("no memory for a session");

        public void Dispose()
        {
            // The fixture owns the model.
        }
    }
}
