using System.Net;
using System.Text.Json;
using KvFetcher.Tests;

namespace KvFetcher.Serving.Tests;

/// <summary>A store going down only turns hits into recomputes; bad requests get OpenAI-style 4xx; capacity gives 429.</summary>
public sealed class FaultTests(ServingFixture fixture) : IClassFixture<ServingFixture>
{
    [Fact]
    public async Task StoreStoppedDuringTraffic_RequestsRecompute_SameAnswers()
    {
        StoreHarness store = await StoreHarness.StartAsync();
        KvFetcherOptions options = fixture.EngineOptions(store.Url, StoreHarness.Token);
        options.FetchTimeout = TimeSpan.FromSeconds(1);
        await using LlmHarness server = await LlmHarness.StartAsync(options);
        string[] questions = ["What is reverted?", "Who wrote this?", "What comes next?"];
        string[] expected = [.. questions.Select(q => fixture.GreedyChat(fixture.Question(q), 8))];

        ChatAnswer warm = await server.ChatAsync(fixture.Question(questions[0]), 8);
        await server.Engine.WhenPublishedAsync();
        ChatAnswer hit = await server.ChatAsync(fixture.Question(questions[1]), 8);
        Assert.True(hit.ReusedTokens >= 3 * 256);

        // Traffic in flight while the store goes away.
        Task<ChatAnswer>[] during = [.. questions.Select(q => server.ChatAsync(fixture.Question(q), 8))];
        await store.DisposeAsync();
        ChatAnswer[] answers = await Task.WhenAll(during);
        ChatAnswer after = await server.ChatAsync(fixture.Question(questions[2]), 8);

        Assert.Equal(expected[0], warm.Text);
        Assert.Equal(expected[1], hit.Text);
        Assert.Equal(expected, answers.Select(a => a.Text));
        Assert.Equal(expected[2], after.Text);
        Assert.Equal(0, after.ReusedTokens);
        Assert.True(after.KvFetcher.GetProperty("lookup_failed").GetBoolean());
        string metrics = await server.Http.GetStringAsync("metrics", TestContext.Current.CancellationToken);
        Assert.True(MetricsScrape.Parse(metrics).Value("kvfetch_llm_lookup_failures_total") > 0);
        Assert.Equal(0, MetricsScrape.Parse(metrics).Value("kvfetch_llm_failed_total"));
    }

    [Fact]
    public async Task BadRequests_OpenAiErrors_ServerKeepsServing()
    {
        (string Path, string Body, int Status, string? Code)[] cases =
        [
            ("v1/chat/completions", "{\"messages\": [", 400, null),
            ("v1/chat/completions", "[1, 2]", 400, null),
            ("v1/chat/completions", "", 400, null),
            ("v1/chat/completions", "{\"model\": \"gpt-4o\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", 404, "model_not_found"),
            ("v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": -5}", 400, null),
            ("v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_completion_tokens\": 0}", 400, null),
            ("v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 5000}", 400, "context_length_exceeded"),
            ("v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 99999999999}", 400, null),
            ("v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"temperature\": 3}", 400, null),
            ("v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"top_p\": 0}", 400, null),
            ("v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stop\": 7}", 400, null),
            ("v1/chat/completions", "{\"messages\": []}", 400, null),
            ("v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": {\"x\": 1}}]}", 400, null),
            ("v1/chat/completions", "{\"messages\": [{\"content\": \"hi\"}]}", 400, null),
            ("v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"n\": 2}", 400, null),
            ("v1/completions", "{\"prompt\": 12}", 400, null),
            ("v1/completions", "{\"prompt\": [1, 99999]}", 400, null),
            ("v1/completions", "{\"prompt\": \"hi\", \"max_tokens\": -1}", 400, null),
            ("v1/completions", "{\"model\": \"nope\", \"prompt\": \"hi\"}", 404, "model_not_found"),
        ];
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(store: null));

        foreach ((string path, string body, int status, string? code) in cases)
        {
            using HttpResponseMessage response = await server.PostAsync(path, body);
            string text = await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);
            Assert.True(status == (int)response.StatusCode, $"{path} {body}: {(int)response.StatusCode} {text}");
            JsonElement error = JsonDocument.Parse(text).RootElement.GetProperty("error");
            Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
            Assert.False(string.IsNullOrEmpty(error.GetProperty("message").GetString()));
            if (code is not null)
            {
                Assert.Equal(code, error.GetProperty("code").GetString());
            }
        }

        Assert.Equal(fixture.GreedyChat([new("user", "hi")], 4), (await server.ChatAsync([new("user", "hi")], 4)).Text);
        string metrics = await server.Http.GetStringAsync("metrics", TestContext.Current.CancellationToken);
        Assert.True(MetricsScrape.Parse(metrics).Value("kvfetch_llm_http_requests_total", "route=chat", "code=400") > 0);
    }

    [Fact]
    public async Task OversizePrompt_ContextLengthExceeded_ServerKeepsServing()
    {
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(store: null));
        string longText = string.Concat(Enumerable.Repeat(fixture.Document, 6));
        string chat = JsonSerializer.Serialize(new { messages = new[] { new { role = "user", content = longText } } });
        string completion = JsonSerializer.Serialize(new { prompt = Enumerable.Repeat(42, 4096).ToArray(), max_tokens = 1 });

        using HttpResponseMessage chatResponse = await server.PostAsync("v1/chat/completions", chat);
        using HttpResponseMessage completionResponse = await server.PostAsync("v1/completions", completion);

        foreach (HttpResponseMessage response in (HttpResponseMessage[])[chatResponse, completionResponse])
        {
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            JsonElement error = JsonDocument.Parse(await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken)).RootElement.GetProperty("error");
            Assert.Equal("context_length_exceeded", error.GetProperty("code").GetString());
        }

        Assert.Equal(fixture.GreedyChat([new("user", "hi")], 4), (await server.ChatAsync([new("user", "hi")], 4)).Text);
    }

    [Fact]
    public async Task BeyondCapacity_TooManyRequests_ThenServesAgain()
    {
        KvFetcherOptions options = fixture.EngineOptions(store: null);
        options.MaxActiveSessions = 1;
        options.MaxQueuedRequests = 0;
        await using LlmHarness server = await LlmHarness.StartAsync(options);
        // A long stream holds the only session; the greedy model loops rather than ending early.
        using var hold = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/completions")
        {
            Content = new StringContent("""{"prompt": "In Perl, a hash is", "max_tokens": 3000, "temperature": 0, "stream": true}""", System.Text.Encoding.UTF8, "application/json"),
        };
        HttpResponseMessage streaming = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, hold.Token);
        Stream events = await streaming.Content.ReadAsStreamAsync(hold.Token);
        _ = await events.ReadAsync(new byte[16], hold.Token); // the first event: the session is busy

        using HttpResponseMessage refused = await server.PostAsync("v1/completions", """{"prompt": "hi", "max_tokens": 2}""");
        await hold.CancelAsync();
        streaming.Dispose();

        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        JsonElement refusal = JsonDocument.Parse(await refused.Content.ReadAsStringAsync(TestContext.Current.CancellationToken)).RootElement.GetProperty("error");
        Assert.Equal("rate_limit_exceeded", refusal.GetProperty("code").GetString());
        Assert.Equal("requests", refusal.GetProperty("type").GetString());
        // The abandoned stream frees its session; the server serves again.
        for (int attempt = 0; attempt < 100 && server.Engine.Scheduler.ActiveSessions > 0; attempt++)
        {
            await Task.Delay(50, TestContext.Current.CancellationToken);
        }

        using HttpResponseMessage served = await server.PostAsync("v1/completions", """{"prompt": "hi", "max_tokens": 2, "temperature": 0}""");
        Assert.Equal(HttpStatusCode.OK, served.StatusCode);
    }
}
