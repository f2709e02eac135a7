using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using KvFetcher.Tests;

namespace KvFetcher.Serving.Tests;

/// <summary>
/// Limits are checked before heavy work (a 7 MB prompt is refused before it is tokenized), and a client that leaves
/// stops its work: tokenization and prefill end, its session and its queue place go to others.
/// </summary>
public sealed class RequestLimitTests(ServingFixture fixture, ITestOutputHelper output) : IClassFixture<ServingFixture>
{
    // A hang guard, not a speed check (the target is 2 s of CPU; before the fix this took minutes).
    private static readonly TimeSpan s_hangGuard = TimeSpan.FromSeconds(10);

    [Theory]
    [InlineData("v1/completions")]
    [InlineData("v1/chat/completions")]
    public async Task SevenMegabytePromptWithoutSpaces_RefusedBeforeTokenizing(string path)
    {
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(store: null));
        var random = new Random(7);
        string text = string.Create(7_000_000, random, static (span, r) =>
        {
            for (int i = 0; i < span.Length; i++)
            {
                span[i] = (char)('a' + r.Next(26));
            }
        });
        string body = path == "v1/completions"
            ? JsonSerializer.Serialize(new { prompt = text, max_tokens = 4 })
            : JsonSerializer.Serialize(new { messages = new[] { new { role = "user", content = text } }, max_tokens = 4 });
        using var guard = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        guard.CancelAfter(s_hangGuard);
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        TimeSpan cpu = Process.GetCurrentProcess().TotalProcessorTime;
        long start = Stopwatch.GetTimestamp();

        using HttpResponseMessage response = await server.Http.SendAsync(request, guard.Token);
        string answer = await response.Content.ReadAsStringAsync(guard.Token);

        output.WriteLine($"{path}: {body.Length:N0} bytes answered {(int)response.StatusCode} in {Stopwatch.GetElapsedTime(start).TotalSeconds:F3} s, " +
            $"{(Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds:F3} s of CPU (client and server)");
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        JsonElement error = JsonDocument.Parse(answer).RootElement.GetProperty("error");
        Assert.Equal("context_length_exceeded", error.GetProperty("code").GetString());
        Assert.Contains("characters", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal(fixture.GreedyChat([new("user", "hi")], 4), (await server.ChatAsync([new("user", "hi")], 4)).Text);
    }

    [Fact]
    public async Task ManyMessagesOrHugeMaxTokens_RefusedBeforeTokenizing()
    {
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(store: null));
        int window = server.Engine.Model.Config.MaxPositionEmbeddings;
        string messages = JsonSerializer.Serialize(new { messages = Enumerable.Repeat(new { role = "user", content = "" }, window + 1) });
        string maxTokens = JsonSerializer.Serialize(new { prompt = "hi", max_tokens = window });
        string ids = JsonSerializer.Serialize(new { prompt = Enumerable.Repeat(42, window + 1), max_tokens = 1 });

        foreach ((string path, string body, string param) in ((string, string, string)[])
            [("v1/chat/completions", messages, "messages"), ("v1/completions", maxTokens, "max_tokens"), ("v1/completions", ids, "prompt")])
        {
            using HttpResponseMessage response = await server.PostAsync(path, body);
            string text = await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);
            Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{param}: {(int)response.StatusCode} {text}");
            JsonElement error = JsonDocument.Parse(text).RootElement.GetProperty("error");
            Assert.Equal("context_length_exceeded", error.GetProperty("code").GetString());
            Assert.Equal(param, error.GetProperty("param").GetString());
        }
    }

    [Fact]
    public async Task ClientLeavesMidPrefill_PrefillAbandonedAndSessionReleased()
    {
        KvFetcherOptions options = fixture.EngineOptions(store: null);
        options.PrefillStepTokens = 8; // about 500 slices: the prefill is still running when the client leaves
        await using LlmHarness server = await LlmHarness.StartAsync(options);
        int[] prompt = LongPrompt(server);
        using var client = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/completions")
        {
            Content = new StringContent(JsonSerializer.Serialize(new { prompt, max_tokens = 4, temperature = 0 }), Encoding.UTF8, "application/json"),
        };
        Task<HttpResponseMessage> sending = server.Http.SendAsync(request, client.Token);
        await WaitUntilAsync(() => server.Engine.Scheduler.ActiveSessions == 1, "the request to hold a session");
        await Task.Delay(200, TestContext.Current.CancellationToken);

        await client.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => sending);

        await WaitUntilAsync(() => server.Engine.Scheduler.ActiveSessions == 0, "the session to be released");
        string metrics = await server.Http.GetStringAsync("metrics", TestContext.Current.CancellationToken);
        Assert.Equal(1, MetricsScrape.Parse(metrics).Value("kvfetch_llm_cancelled_total"));
        // The prompt was never finished: no first token was chosen.
        Assert.Equal(0, MetricsScrape.Parse(metrics).Value("kvfetch_llm_prefills_total"));
        Assert.Equal(fixture.GreedyChat([new("user", "hi")], 4), (await server.ChatAsync([new("user", "hi")], 4)).Text);
    }

    [Fact]
    public async Task QueuedClientLeaves_QueuePlaceFreedAtOnce()
    {
        KvFetcherOptions options = fixture.EngineOptions(store: null);
        options.MaxActiveSessions = 1;
        options.MaxQueuedRequests = 1;
        await using LlmHarness server = await LlmHarness.StartAsync(options);

        // A holds the only session with a long stream (the greedy model loops rather than ending early); B waits in
        // the queue, then its client leaves.
        using var holder = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        using var holding = new HttpRequestMessage(HttpMethod.Post, "v1/completions")
        {
            Content = new StringContent("""{"prompt": "In Perl, a hash is", "max_tokens": 3000, "temperature": 0, "stream": true}""", Encoding.UTF8, "application/json"),
        };
        using HttpResponseMessage a = await server.Http.SendAsync(holding, HttpCompletionOption.ResponseHeadersRead, holder.Token);
        Stream events = await a.Content.ReadAsStreamAsync(holder.Token);
        _ = await events.ReadAsync(new byte[16], holder.Token);
        Assert.Equal(1, server.Engine.Scheduler.ActiveSessions);
        using var leaver = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        Task<HttpResponseMessage> b = Send(server, """{"prompt": "hi", "max_tokens": 2}""", leaver.Token);
        await WaitUntilAsync(() => server.Engine.Scheduler.QueuedRequests == 1, "B to be queued");
        await leaver.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => b);

        // B's place is free while A still runs: C is queued, not refused.
        await WaitUntilAsync(() => server.Engine.Scheduler.QueuedRequests == 0, "B to leave the queue");
        Assert.Equal(1, server.Engine.Scheduler.ActiveSessions);
        Task<HttpResponseMessage> c = Send(server, """{"prompt": "hi", "max_tokens": 2, "temperature": 0}""", TestContext.Current.CancellationToken);
        await WaitUntilAsync(() => server.Engine.Scheduler.QueuedRequests == 1 || c.IsCompleted, "C to be queued");
        Assert.False(c.IsCompleted, "C was answered while A held the only session (429?)");
        await holder.CancelAsync();
        a.Dispose();

        using HttpResponseMessage served = await c;
        Assert.Equal(HttpStatusCode.OK, served.StatusCode);
        string metrics = await server.Http.GetStringAsync("metrics", TestContext.Current.CancellationToken);
        Assert.Equal(0, MetricsScrape.Parse(metrics).Value("kvfetch_llm_rejected_total"));
    }

    // About 4,000 prompt tokens of real text (the model's context is 4,096).
    private int[] LongPrompt(LlmHarness server)
    {
        int[] document = fixture.Model.Tokenizer.Encode(fixture.Document);
        int length = server.Engine.Model.Config.MaxPositionEmbeddings - 96;
        return [.. Enumerable.Range(0, length).Select(i => document[i % document.Length])];
    }

    private static Task<HttpResponseMessage> Send(LlmHarness server, string json, CancellationToken cancellationToken)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        return server.Http.SendAsync(request, cancellationToken);
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        long start = Stopwatch.GetTimestamp();
        while (!condition())
        {
            Assert.True(Stopwatch.GetElapsedTime(start) < s_hangGuard, $"waited {s_hangGuard.TotalSeconds} s for {what}");
            await Task.Delay(10, TestContext.Current.CancellationToken);
        }
    }
}
