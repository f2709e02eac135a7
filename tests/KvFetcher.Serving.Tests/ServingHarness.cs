using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using KvFetcher.Serving.Chat;
using KvFetcher.Server;

namespace KvFetcher.Serving.Tests;

/// <summary>A real <c>kvfetch serve</c> store server on an ephemeral loopback port over a temp directory.</summary>
internal sealed class StoreHarness : IAsyncDisposable
{
    public const string Token = "serving-test-token-0123456789";

    private StoreHarness(string directory, StoreServer server)
    {
        Directory = directory;
        Server = server;
    }

    public string Directory { get; }

    public StoreServer Server { get; }

    public string Url => Server.Addresses[0].ToString().TrimEnd('/');

    public static async Task<StoreHarness> StartAsync()
    {
        string directory = Path.Combine(Path.GetTempPath(), "kvf-serving-store-" + Guid.NewGuid().ToString("N"));
        StoreServer server = await StoreServer.StartAsync(new StoreServerOptions { DataDirectory = directory, Token = Token, Urls = ["http://127.0.0.1:0"] });
        return new StoreHarness(directory, server);
    }

    public async ValueTask DisposeAsync()
    {
        await Server.DisposeAsync();
        if (System.IO.Directory.Exists(Directory))
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
    }
}

/// <summary>One serve-llm instance on an ephemeral loopback port, and an HTTP client for it.</summary>
internal sealed class LlmHarness : IAsyncDisposable
{
    private LlmHarness(LlmServer server)
    {
        Server = server;
        Http = new HttpClient { BaseAddress = server.Addresses[0], Timeout = TimeSpan.FromSeconds(60) };
    }

    public LlmServer Server { get; }

    public HttpClient Http { get; }

    public KvFetcherEngine Engine => Server.Engine;

    public static async Task<LlmHarness> StartAsync(KvFetcherOptions engine, Func<LlmServerOptions, LlmServerOptions>? configure = null)
    {
        var options = new LlmServerOptions { Engine = engine, Urls = ["http://127.0.0.1:0"] };
        options = configure?.Invoke(options) ?? options;
        return new LlmHarness(await LlmServer.StartAsync(options, TestContext.Current.CancellationToken));
    }

    /// <summary>A greedy chat request (non-streaming); the answer and its reuse header.</summary>
    public async Task<ChatAnswer> ChatAsync(ChatTurn[] turns, int maxTokens = 12, string? apiKey = null, string? tenant = null)
    {
        var messages = new JsonArray();
        foreach (ChatTurn turn in turns)
        {
            messages.Add(new JsonObject { ["role"] = turn.Role, ["content"] = turn.Content });
        }

        var body = new JsonObject { ["model"] = "kvf-code-32l", ["messages"] = messages, ["max_tokens"] = maxTokens, ["temperature"] = 0 };
        using HttpResponseMessage response = await PostAsync("v1/chat/completions", body.ToJsonString(), apiKey, tenant);
        string text = await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);
        Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode}: {text}");
        JsonElement root = JsonDocument.Parse(text).RootElement;
        int header = int.Parse(response.Headers.GetValues("X-KvFetcher-Reused-Tokens").Single(), System.Globalization.CultureInfo.InvariantCulture);
        JsonElement usage = root.GetProperty("usage");
        Assert.Equal(header, usage.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32());
        Assert.True(response.Headers.Contains("X-KvFetcher-TTFT-Ms"));
        return new ChatAnswer(root.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!, header,
            usage.GetProperty("prompt_tokens").GetInt32(), usage.GetProperty("kvfetcher"));
    }

    public async Task<HttpResponseMessage> PostAsync(string path, string json, string? apiKey = null, string? tenant = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        if (apiKey is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        }

        if (tenant is not null)
        {
            request.Headers.Add("X-KvFetcher-Tenant", tenant);
        }

        return await Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, TestContext.Current.CancellationToken);
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
    }
}

internal sealed record ChatAnswer(string Text, int ReusedTokens, int PromptTokens, JsonElement KvFetcher);
