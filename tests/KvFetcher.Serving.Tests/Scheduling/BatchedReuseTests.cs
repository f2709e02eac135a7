using System.Text.Json;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Engine;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Restoring;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Serving.Scheduling;
using KvFetcher.Store.Disk;
using KvFetcher.Store.Shaping;
using KvFetcher.Tests;

namespace KvFetcher.Serving.Tests.Scheduling;

/// <summary>
/// Compute and fetch together inside the engine loop: a reuse request's front is computed in the engine's iterations
/// while its back is fetched; the answer is the full prefill's, nobody else waits for its fetch, a stalled fetch still
/// ends in an answer, and the meeting point follows the link.
/// </summary>
public sealed class BatchedReuseTests(ServingFixture fixture) : IClassFixture<ServingFixture>, IAsyncDisposable
{
    private static readonly TimeSpan s_hangGuard = TimeSpan.FromSeconds(120);
    private readonly string _directory = Directory.CreateTempSubdirectory("kvf-batched-").FullName;
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
    [InlineData("ours")]
    [InlineData("ours-layer")]
    [InlineData("cake")]
    [InlineData("fetch")]
    public async Task Submit_StoredContextThroughServingEngine_GreedyEqualsFullPrefill(string strategy)
    {
        KvFetcherOptions options = fixture.EngineOptions(store: _directory);
        options.ReuseStrategy = strategy;
        options.PrefillStepTokens = 128; // the engine side of a chunk takes two iterations
        await using KvFetcherEngine engine = await KvFetcherEngine.StartAsync(options, TestContext.Current.CancellationToken);
        int[] prompt = fixture.Model.Tokenizer.Encode(fixture.Document);
        await engine.Submit(new GenerationRequest { Prompt = prompt, MaxTokens = 1 }, TestContext.Current.CancellationToken).Completion;
        await engine.WhenPublishedAsync();

        GenerationResult result = await engine.Submit(new GenerationRequest { Prompt = prompt, MaxTokens = 12 }, TestContext.Current.CancellationToken)
            .Completion.WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.Equal(fixture.Greedy(prompt, 12), result.Text);
        ReuseSplit split = Assert.IsType<ReuseSplit>(result.Prefill.Reuse);
        Assert.Equal(3, split.StoredChunks);
        Assert.Equal(split.StoredChunks, split.ComputedChunks + split.FetchedChunks);
        Assert.Equal(split.FetchedChunks * 256, result.Prefill.ReusedTokens);
    }

    [Fact]
    public async Task ChatCompletion_OursReusesContext_UsageAndMetricsReportTheSplit()
    {
        KvFetcherOptions options = fixture.EngineOptions(store: _directory);
        options.ReuseStrategy = "ours";
        await using LlmHarness server = await LlmHarness.StartAsync(options);
        await server.ChatAsync(fixture.Question("What does this document describe?"), 2);
        await server.Engine.WhenPublishedAsync();

        ChatAnswer answer = await server.ChatAsync(fixture.Question("How is a faulty merge reverted?"), 2);

        JsonElement usage = answer.KvFetcher;
        int stored = usage.GetProperty("stored_chunks").GetInt32();
        int fetched = usage.GetProperty("fetched_chunks").GetInt32();
        int meeting = usage.GetProperty("meeting_chunk").GetInt32();
        Assert.Equal("ours", usage.GetProperty("strategy").GetString());
        Assert.Equal("ours", usage.GetProperty("plan").GetString());
        Assert.True(stored >= 3, $"stored {stored}");
        Assert.Equal(stored, usage.GetProperty("computed_chunks").GetInt32() + fetched);
        Assert.Equal(fetched * 256, answer.ReusedTokens);
        Assert.InRange(meeting, 0, stored);
        Assert.Equal(fetched, fetched == 0 ? 0 : usage.GetProperty("variants").GetProperty("raw").GetInt32());
        var metrics = MetricsScrape.Parse(await server.Http.GetStringAsync("metrics", TestContext.Current.CancellationToken));
        Assert.Equal(fetched, metrics.Value("kvfetch_llm_reuse_fetched_chunks_total"));
        Assert.NotNull(metrics.Value("kvfetch_llm_reuse_computed_chunks_total"));
    }

    [Fact]
    public async Task Submit_ReuseWaitsForItsRestore_PlainRequestCompletesMeanwhile()
    {
        int[] prompt = LongPrompt();
        await WarmAsync(prompt);
        using var gate = new GatedRestorer();
        await using var reuse = new KvReuse(fixture.Model, _disk!, new ReuseOptions { Ladder = [KvVariant.Raw] }, restorer: gate);
        await using var scheduler = new EngineScheduler(fixture.Model, reuse, new EngineSchedulerOptions { ReuseStrategy = PrefillStrategy.Cake(KvVariant.Raw) }, new ServingMetrics());
        int[] plain = prompt[300..500];
        try
        {
            // Cake fetches the last chunk first; once its restore has begun the engine must wait for it (it never takes a
            // chunk back from the restore), so the reuse request cannot finish while the restore is held.
            Generation reusing = scheduler.Submit(new GenerationRequest { Prompt = prompt, MaxTokens = 2 }, TestContext.Current.CancellationToken);
            await gate.Entered.WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);
            GenerationResult computed = await scheduler.Submit(new GenerationRequest { Prompt = plain, MaxTokens = 4 }, TestContext.Current.CancellationToken)
                .Completion.WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

            Assert.False(reusing.Completion.IsCompleted);
            Assert.Equal(fixture.Greedy(plain, 4), computed.Text);

            gate.Open();
            GenerationResult reused = await reusing.Completion.WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);
            Assert.Equal(fixture.Greedy(prompt, 2), reused.Text);
            Assert.True(reused.Prefill.Reuse!.FetchedChunks >= 1);
            Assert.True(reused.Prefill.Reuse.ComputedChunks >= 1);
        }
        finally
        {
            gate.Open();
        }
    }

    [Theory]
    [InlineData("ours")]
    [InlineData("ours-layer")]
    [InlineData("cake")]
    [InlineData("fetch")]
    public async Task Submit_FetchStallsForever_BothRequestsCompleteByComputing(string strategy)
    {
        int[] prompt = fixture.Model.Tokenizer.Encode(fixture.Document);
        await WarmAsync(prompt);
        await using var stalled = new ShapedKvStore(_disk!, BandwidthSchedule.Constant(1), ownsInner: false); // one byte a second
        await using var reuse = new KvReuse(fixture.Model, stalled, new ReuseOptions { Ladder = [KvVariant.Raw], ChunkTimeout = TimeSpan.FromSeconds(1) });
        await using var scheduler = new EngineScheduler(fixture.Model, reuse, new EngineSchedulerOptions { ReuseStrategy = KvFetcherOptions.ParseStrategy(strategy) }, new ServingMetrics());
        int[] plain = prompt[300..500];

        Generation reusing = scheduler.Submit(new GenerationRequest { Prompt = prompt, MaxTokens = 3 }, TestContext.Current.CancellationToken);
        Generation other = scheduler.Submit(new GenerationRequest { Prompt = plain, MaxTokens = 3 }, TestContext.Current.CancellationToken);
        GenerationResult reused = await reusing.Completion.WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);
        GenerationResult computed = await other.Completion.WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.Equal(fixture.Greedy(prompt, 3), reused.Text);
        Assert.Equal(fixture.Greedy(plain, 3), computed.Text);
        Assert.Equal(0, reused.Prefill.ReusedTokens);
        Assert.Equal(3, reused.Prefill.Reuse!.ComputedChunks);
    }

    [Fact]
    public async Task Submit_OursLayerWhenComputeAndFetchAreClose_SplitsAChunkByLayersInTheEngineLoop()
    {
        int[] prompt = fixture.Model.Tokenizer.Encode(fixture.Document);
        await WarmAsync(prompt);
        await using var reuse = new KvReuse(fixture.Model, _disk!, new ReuseOptions { Ladder = [KvVariant.Raw], LosslessOnly = true });
        // As the rates say: a chunk computes in 1 s and arrives raw in 2/3 s: meeting inside a chunk split by layers is fastest.
        reuse.Rates.SetBandwidth(reuse.Plan(prompt).ChunkBytes / (2.0 / 3));
        for (int i = 0; i < 40; i++)
        {
            reuse.Rates.ObserveCompute(i % 3, 1.0);
        }

        await using var scheduler = new EngineScheduler(fixture.Model, reuse, new EngineSchedulerOptions { ReuseStrategy = KvFetcherOptions.ParseStrategy("ours-layer") }, new ServingMetrics());

        GenerationResult result = await scheduler.Submit(new GenerationRequest { Prompt = prompt, MaxTokens = 6 }, TestContext.Current.CancellationToken)
            .Completion.WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.Equal(fixture.Greedy(prompt, 6), result.Text);
        ReuseSplit split = Assert.IsType<ReuseSplit>(result.Prefill.Reuse);
        Assert.Equal("ours-layer", split.Strategy);
        Assert.Equal("layer-split", split.Plan);
        Assert.InRange(split.SplitChunk, 0, split.StoredChunks - 1);
        Assert.InRange(split.SplitLayers, 1, fixture.Model.Config.NumLayers - 1);
        Assert.Equal(0, split.FailedChunks);
    }

    [Fact]
    public async Task Submit_OursOverFastAndSlowLinks_MeetingPointMovesWithTheLink()
    {
        int[] prompt = LongPrompt();
        await WarmAsync(prompt);
        await using var slow = new ShapedKvStore(_disk!, BandwidthSchedule.Constant(2e6), ownsInner: false);
        string expected = fixture.Greedy(prompt, 1);

        ReuseSplit fast = await LastSplitAsync(_disk!);
        ReuseSplit slowed = await LastSplitAsync(slow);

        // Straight from the disk the fetcher delivers most of the prefix; over 2 MB/s a chunk takes far longer than
        // computing it, so the engine goes further before meeting the fetcher.
        Assert.True(fast.FetchedChunks > slowed.FetchedChunks, $"fast {fast.FetchedChunks} fetched, slow {slowed.FetchedChunks}");
        Assert.True(fast.MeetingChunk < slowed.MeetingChunk, $"fast met at {fast.MeetingChunk}, slow at {slowed.MeetingChunk}");

        async Task<ReuseSplit> LastSplitAsync(Store.IKvStore store)
        {
            // Rates are learned per instance: the later requests meet where the measured rates predict.
            await using var reuse = new KvReuse(fixture.Model, store, new ReuseOptions { Ladder = [KvVariant.Raw] });
            await using var scheduler = new EngineScheduler(fixture.Model, reuse, new EngineSchedulerOptions(), new ServingMetrics());
            GenerationResult? last = null;
            for (int i = 0; i < 3; i++)
            {
                last = await scheduler.Submit(new GenerationRequest { Prompt = prompt, MaxTokens = 1 }, TestContext.Current.CancellationToken)
                    .Completion.WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);
                Assert.Equal(expected, last.Text);
            }

            return last!.Prefill.Reuse!;
        }
    }

    /// <summary>About 1,700 tokens of documentation: six stored chunks and a suffix.</summary>
    private int[] LongPrompt()
    {
        int[] tokens = fixture.Model.Tokenizer.Encode(fixture.Document + "\n\n" + fixture.Document);
        return tokens[..Math.Min(tokens.Length, 1700)];
    }

    private async Task WarmAsync(int[] prompt)
    {
        _disk = DiskKvStore.Open(new DiskKvStoreOptions { Directory = _directory, Fsync = false });
        await using var writer = new KvReuse(fixture.Model, _disk, new ReuseOptions { Ladder = [KvVariant.Raw] });
        await writer.WarmAsync(prompt, TestContext.Current.CancellationToken);
    }

    /// <summary>The CPU restorer, except that each restore waits until <see cref="Open"/> (decode is not held).</summary>
    private sealed class GatedRestorer : IChunkRestorer, IDisposable
    {
        private readonly ManualResetEventSlim _open = new(false);
        private readonly TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public string Name => "gated";

        /// <summary>Completes when the first restore has begun (its chunk is then restoring on the board).</summary>
        public Task Entered => _entered.Task;

        public void Open() => _open.Set();

        public IRestoreSlot CreateSlot(KvShape shape, DType dtype) => new Slot(this, HostChunkRestorer.Instance.CreateSlot(shape, dtype));

        public void Dispose() => _open.Dispose();

        private sealed class Slot(GatedRestorer gate, IRestoreSlot inner) : IRestoreSlot
        {
            public void Decode(ReadOnlyMemory<byte> container, in ChunkExpectation expected, KvVariant variant) => inner.Decode(container, expected, variant);

            public void Restore(IKvCache cache, int start, int end)
            {
                gate._entered.TrySetResult();
                gate._open.Wait();
                inner.Restore(cache, start, end);
            }

            public void Dispose() => inner.Dispose();
        }
    }
}
