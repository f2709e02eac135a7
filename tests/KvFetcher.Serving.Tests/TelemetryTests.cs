using KvFetcher.Serving.Chat;
using KvFetcher.Tests;

namespace KvFetcher.Serving.Tests;

/// <summary>serve-llm's <c>/metrics</c> through the OpenTelemetry Prometheus exporter: valid for promtool, and the reuse series move.</summary>
public sealed class TelemetryTests(ServingFixture fixture) : IClassFixture<ServingFixture>, IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("kvf-serving-telemetry-").FullName;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public async Task Metrics_SameRequestTwice_PerVariantSeriesMove()
    {
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(_directory));
        ChatTurn[] question = fixture.Question("What does this document describe?");

        ChatAnswer cold = await server.ChatAsync(question, maxTokens: 4);
        await server.Engine.WhenPublishedAsync();
        var before = MetricsScrape.Parse(await server.Http.GetStringAsync("metrics", Ct));
        ChatAnswer warm = await server.ChatAsync(question, maxTokens: 4);
        var after = MetricsScrape.Parse(await server.Http.GetStringAsync("metrics", Ct));

        Assert.Equal(0, cold.ReusedTokens);
        Assert.True(warm.ReusedTokens >= 3 * 256, $"reused {warm.ReusedTokens}");
        int chunks = warm.ReusedTokens / 256;
        Assert.Equal(0, before.Sum("kvfetch_reuse_restored_chunks_total"));
        Assert.Equal(chunks, after.Sum("kvfetch_reuse_restored_chunks_total"));
        string variant = Assert.Single(after.LabelsOf("kvfetch_reuse_restored_chunks_total"))["variant"];
        Assert.Equal(chunks, after.Value("kvfetch_reuse_restored_chunks_total", $"variant={variant}"));
        Assert.True(after.Value("kvfetch_reuse_restored_bytes_total", $"variant={variant}") > 0);
        Assert.Equal(chunks, after.Value("kvfetch_reuse_chunk_decode_duration_seconds_count", $"variant={variant}"));
        Assert.True(after.Value("kvfetch_store_client_read_bytes_total") > (before.Value("kvfetch_store_client_read_bytes_total") ?? 0));
        Assert.True(before.Value("kvfetch_store_client_written_bytes_total") > 0);
        Assert.True(after.Sum("kvfetch_store_client_operation_duration_seconds_count", "operation=get") >= chunks);
        Assert.Equal(0, after.Sum("kvfetch_reuse_fallbacks_total"));
        Assert.Equal(before.Value("kvfetch_llm_reuse_hits_total") + 1, after.Value("kvfetch_llm_reuse_hits_total"));
        Assert.Equal(2, after.Value("kvfetch_llm_ttft_seconds_count"));
        Assert.Equal(2, after.Value("kvfetch_llm_request_prompt_tokens_count"));
        // One gap between each two tokens of an answer.
        Assert.Equal(after.Value("kvfetch_llm_generated_tokens_total") - 2, after.Value("kvfetch_llm_inter_token_latency_seconds_count"));
        Assert.Equal(2, after.Value("kvfetch_llm_request_decode_seconds_count"));
        Assert.Equal(1, after.Value("kvfetch_llm_model_info", $"model={ServingFixture.ModelId}", "engine=cpu"));
        Assert.Equal(0, after.Value("kvfetch_llm_kv_cache_usage_bytes"));
    }

    [Fact]
    public async Task Metrics_AfterRequests_PassPromtoolCheck()
    {
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(_directory));
        ChatTurn[] question = fixture.Question("How is a faulty merge reverted?");
        await server.ChatAsync(question, maxTokens: 2);
        await server.Engine.WhenPublishedAsync();
        await server.ChatAsync(question, maxTokens: 2);

        var scrape = MetricsScrape.Parse(await server.Http.GetStringAsync("metrics", Ct));
        (int ExitCode, string Output)? check = await scrape.PromtoolCheckAsync(Ct);

        TestContext.Current.TestOutputHelper?.WriteLine(scrape.Text);
        Assert.Contains("kvfetch_reuse_restored_chunks_total", scrape.Names);
        Assert.SkipWhen(check is null, "promtool is not installed (Debian package prometheus, or set $PROMTOOL)");
        Assert.True(check!.Value.ExitCode == 0 && check.Value.Output.Trim().Length == 0, $"promtool check metrics:\n{check.Value.Output}\n{scrape.Text}");
    }
}
