using KvFetcher.Serving.Chat;
using KvFetcher.Store.Tests.Redis;
using KvFetcher.Tests;

namespace KvFetcher.Serving.Tests;

/// <summary>
/// Two serve-llm instances sharing one KV store: a context computed by instance A is reused by instance B, whose
/// answer is exactly the answer of a full prefill (greedy, lossless chunks).
/// </summary>
public sealed class TwoInstanceTests(ServingFixture fixture) : IClassFixture<ServingFixture>
{
    private const int MaxTokens = 12;

    [Fact]
    public async Task SharedStoreServer_SecondInstance_ReusesPrefixAndAnswersAsFullPrefill()
    {
        await using StoreHarness store = await StoreHarness.StartAsync();
        await RunAsync(fixture.EngineOptions(store.Url, StoreHarness.Token));
    }

    [Fact]
    public async Task SharedRedisCluster_SecondInstance_ReusesPrefixAndAnswersAsFullPrefill()
    {
        await using RedisDeployment cluster = await RedisDeployment.StartClusterAsync(3, TestContext.Current.CancellationToken);
        await RunAsync(fixture.EngineOptions("redis://" + cluster.ConnectionString));
    }

    private async Task RunAsync(KvFetcherOptions options)
    {
        await using LlmHarness a = await LlmHarness.StartAsync(options);
        await using LlmHarness b = await LlmHarness.StartAsync(options);
        ChatTurn[] first = fixture.Question("What does this document describe?");
        ChatTurn[] second = fixture.Question("How is a faulty merge reverted?");

        ChatAnswer fromA = await a.ChatAsync(first, MaxTokens);
        await a.Engine.WhenPublishedAsync();
        ChatAnswer fromB = await b.ChatAsync(second, MaxTokens);

        // A computed everything (nothing was stored); B fetched every full chunk the two prompts share.
        Assert.Equal(0, fromA.ReusedTokens);
        int[] tokensA = fixture.ChatTokens(first);
        int[] tokensB = fixture.ChatTokens(second);
        int shared = 0;
        while (shared < Math.Min(tokensA.Length, tokensB.Length) && tokensA[shared] == tokensB[shared])
        {
            shared++;
        }

        int sharedChunks = Math.Min(shared, tokensA.Length - 1) / 256;
        Assert.True(sharedChunks >= 3, $"the prompts share only {shared} tokens");
        Assert.Equal(sharedChunks * 256, fromB.ReusedTokens);
        Assert.Equal(tokensB.Length, fromB.PromptTokens);
        Assert.Equal(tokensB.Length - fromB.ReusedTokens, fromB.KvFetcher.GetProperty("computed_tokens").GetInt32());
        Assert.True(fromB.KvFetcher.GetProperty("bytes_fetched").GetInt64() > 0);
        Assert.Equal(0, fromB.KvFetcher.GetProperty("fallback_chunks").GetInt32());

        // Both answers are what a full prefill gives.
        Assert.Equal(fixture.GreedyChat(first, MaxTokens), fromA.Text);
        Assert.Equal(fixture.GreedyChat(second, MaxTokens), fromB.Text);

        TestContext.Current.TestOutputHelper?.WriteLine(
            $"TTFT A (computed {fromA.PromptTokens} tokens): {fromA.KvFetcher.GetProperty("ttft_ms")} ms; B (reused {fromB.ReusedTokens} of {fromB.PromptTokens}): {fromB.KvFetcher.GetProperty("ttft_ms")} ms");

        // B's metrics count the hit.
        string metrics = await b.Http.GetStringAsync("metrics", TestContext.Current.CancellationToken);
        var scrape = MetricsScrape.Parse(metrics);
        Assert.Equal(1, scrape.Value("kvfetch_llm_reuse_hits_total"));
        Assert.Equal(fromB.ReusedTokens, scrape.Value("kvfetch_llm_reused_tokens_total"));
        Assert.Equal(sharedChunks, scrape.Sum("kvfetch_reuse_restored_chunks_total"));
    }
}
