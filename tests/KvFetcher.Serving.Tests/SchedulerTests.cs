using KvFetcher.Serving.Scheduling;
using KvFetcher.Serving.Tests.Scheduling;

namespace KvFetcher.Serving.Tests;

/// <summary>Continuous scheduling on one engine: interleaved requests, each exactly as if it ran alone; bounded admission.</summary>
public sealed class SchedulerTests(ServingFixture fixture) : IClassFixture<ServingFixture>
{
    [Fact]
    public async Task ConcurrentRequests_Interleaved_EachAsIfAlone()
    {
        KvFetcherOptions options = fixture.EngineOptions(store: null);
        options.PrefillStepTokens = 64; // long prompts in several slices between other requests' decode steps
        await using KvFetcherEngine engine = await KvFetcherEngine.StartAsync(options, TestContext.Current.CancellationToken);
        int[][] prompts =
        [
            fixture.Model.Tokenizer.Encode(fixture.Document[..1500]),
            fixture.Model.Tokenizer.Encode("The :mod:`json` module provides"),
            fixture.Model.Tokenizer.Encode(fixture.Document[1000..2200]),
            fixture.Model.Tokenizer.Encode("To enable this driver, the kernel must be"),
        ];

        Generation[] running = [.. prompts.Select(p => engine.Submit(new GenerationRequest { Prompt = p, MaxTokens = 20 }, TestContext.Current.CancellationToken))];
        GenerationResult[] results = await Task.WhenAll(running.Select(g => g.Completion));

        for (int i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(fixture.Greedy(prompts[i], 20), results[i].Text);
            Assert.Equal(prompts[i].Length, results[i].Prefill.PromptTokens);
        }
    }

    [Fact]
    public async Task FinishedAnswer_ChunksItCompletesArePublished_NextTurnReusesThem()
    {
        string store = Directory.CreateTempSubdirectory("kvf-answers-").FullName;
        try
        {
            await using KvFetcherEngine engine = await KvFetcherEngine.StartAsync(fixture.EngineOptions(store: store), TestContext.Current.CancellationToken);
            int[] prompt = fixture.Model.Tokenizer.Encode(fixture.Document)[..505];

            // Turn 1: 505 prompt tokens (one full chunk and most of a second) and 8 generated in mid-document (no end of
            // sequence there); the cache then holds 512 positions, so the answer completes the second chunk.
            GenerationResult first = await engine.Submit(new GenerationRequest { Prompt = prompt, MaxTokens = 8 }, TestContext.Current.CancellationToken).Completion;
            Assert.Equal(GreedyIds(prompt, 8).Length, first.CompletionTokens);
            Assert.Equal(8, first.CompletionTokens);
            await engine.WhenPublishedAsync();

            // Turn 2 repeats turn 1 and its answer (as a chat client sends the history back) and asks on.
            int[] answer = GreedyIds(prompt, 7);
            int[] next = [.. prompt, .. answer, .. fixture.Model.Tokenizer.Encode(" Question: what next?")];
            GenerationResult second = await engine.Submit(new GenerationRequest { Prompt = next, MaxTokens = 8 }, TestContext.Current.CancellationToken).Completion;

            Assert.Equal(512, second.Prefill.ReusedTokens);
            Assert.Equal(fixture.Greedy(next, 8), second.Text);
        }
        finally
        {
            Directory.Delete(store, recursive: true);
        }
    }

    private int[] GreedyIds(int[] prompt, int count)
    {
        var generator = new KvFetcher.Engine.Generation.TextGenerator(fixture.Model.CreateSession(prompt.Length + count), new KvFetcher.Engine.Generation.SamplingOptions { MaxTokens = count });
        return [.. generator.Generate(prompt)];
    }

    [Fact]
    public async Task ShortRequestDuringLongGeneration_FinishesFirst()
    {
        var model = new EndlessModel(fixture.Model);
        await using var scheduler = new EngineScheduler(model, reuse: null, new EngineSchedulerOptions(), new ServingMetrics());
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        // A model that never ends: up to 3,000 tokens of decode steps.
        Generation longOne = scheduler.Submit(new GenerationRequest { Prompt = fixture.Model.Tokenizer.Encode("In Perl, a hash is"), MaxTokens = 3000, Stream = true }, cancel.Token);
        await longOne.FirstToken;

        int[] prompt = fixture.Model.Tokenizer.Encode(fixture.Document);
        Generation shortOne = scheduler.Submit(new GenerationRequest { Prompt = prompt, MaxTokens = 4 }, TestContext.Current.CancellationToken);
        GenerationResult done = await shortOne.Completion;

        // The short request was served between the long one's decode steps, not after it, and the long one goes on.
        Assert.False(longOne.Completion.IsCompleted);
        Assert.Equal(model.Greedy(prompt, 4), done.Text);
        Assert.True(longOne.Text.TryRead(out _));
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => longOne.Completion);
        for (int attempt = 0; attempt < 100 && scheduler.ActiveSessions > 0; attempt++)
        {
            await Task.Delay(20, TestContext.Current.CancellationToken);
        }

        Assert.Equal(0, scheduler.ActiveSessions);
    }

    [Fact]
    public async Task BeyondSessionsAndQueue_Refused_QueuedOneRunsLater()
    {
        var model = new EndlessModel(fixture.Model);
        var metrics = new ServingMetrics();
        await using var scheduler = new EngineScheduler(model, reuse: null, new EngineSchedulerOptions { MaxActiveSessions = 1, MaxQueuedRequests = 1 }, metrics);
        int[] prompt = fixture.Model.Tokenizer.Encode("In Perl, a hash is");
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);

        Generation active = scheduler.Submit(new GenerationRequest { Prompt = prompt, MaxTokens = 3000 }, cancel.Token);
        Generation queued = scheduler.Submit(new GenerationRequest { Prompt = prompt, MaxTokens = 3 }, TestContext.Current.CancellationToken);
        Assert.Throws<EngineBusyException>(() => scheduler.Submit(new GenerationRequest { Prompt = prompt, MaxTokens = 3 }, TestContext.Current.CancellationToken));
        Assert.Equal(1, scheduler.QueuedRequests);
        Assert.False(queued.FirstToken.IsCompleted);

        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => active.Completion);
        GenerationResult result = await queued.Completion;

        Assert.Equal(model.Greedy(prompt, 3), result.Text);
        Assert.Equal(3, result.CompletionTokens);
        Assert.True(result.Prefill.Queue > TimeSpan.Zero);
        Assert.Equal(1, metrics.Rejected);
    }

    [Fact]
    public async Task SeededSampling_SameAsTextGeneratorWithThatSeed()
    {
        await using KvFetcherEngine engine = await KvFetcherEngine.StartAsync(fixture.EngineOptions(store: null), TestContext.Current.CancellationToken);
        int[] prompt = fixture.Model.Tokenizer.Encode("To enable this driver, the kernel must be");
        var sampling = new KvFetcher.Engine.Generation.SamplingOptions { Temperature = 0.9f, TopP = 0.95f, Seed = 11, MaxTokens = 24 };
        var generator = new KvFetcher.Engine.Generation.TextGenerator(fixture.Model.CreateSession(prompt.Length + 24), sampling);
        string expected = fixture.Model.Tokenizer.Decode([.. generator.Generate(prompt)], skipSpecial: true);

        var request = new GenerationRequest { Prompt = prompt, MaxTokens = 24, Temperature = 0.9f, TopP = 0.95f, Seed = 11 };
        GenerationResult[] results = await Task.WhenAll(engine.Submit(request, TestContext.Current.CancellationToken).Completion,
            engine.Submit(request, TestContext.Current.CancellationToken).Completion);

        Assert.Equal(expected, results[0].Text);
        Assert.Equal(expected, results[1].Text);
    }

    [Fact]
    public async Task PromptAndLimitBeyondContext_Refused()
    {
        await using KvFetcherEngine engine = await KvFetcherEngine.StartAsync(fixture.EngineOptions(store: null), TestContext.Current.CancellationToken);

        Assert.Throws<ArgumentException>(() => engine.Submit(new GenerationRequest { Prompt = new int[4000], MaxTokens = 200 }, TestContext.Current.CancellationToken));
        Assert.Throws<ArgumentOutOfRangeException>(() => engine.Submit(new GenerationRequest { Prompt = [0, 5], MaxTokens = 0 }, TestContext.Current.CancellationToken));
        Assert.Equal(0, engine.Scheduler.ActiveSessions);
    }
}
