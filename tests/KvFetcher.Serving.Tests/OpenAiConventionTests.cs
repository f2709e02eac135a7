using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using KvFetcher.Serving.Extensions;
using Microsoft.Extensions.AI;

namespace KvFetcher.Serving.Tests;

/// <summary>
/// What OpenAI clients expect of serve-llm beyond the happy path, over raw HTTP: every unsupported field refused with a
/// 400 that names it, unknown routes and wrong methods answered in the error format (after authentication), bad JSON
/// explained in plain words with the field in <c>param</c>; and the in-process <see cref="IChatClient"/> refusing the
/// same options with the same words.
/// </summary>
public sealed class OpenAiConventionTests(ServingFixture fixture) : IClassFixture<ServingFixture>
{
    private const string Chat = "v1/chat/completions";
    private const string Completions = "v1/completions";
    private const string Key = "convention-test-key-0123456789";
    private const string Hi = "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task UnsupportedFields_BadRequestNamingTheField()
    {
        (string Path, string Body, string Param)[] cases =
        [
            (Chat, "{" + Hi + """, "response_format": {"type": "json_object"}}""", "response_format"),
            (Chat, "{" + Hi + """, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}""", "response_format"),
            (Chat, "{" + Hi + """, "response_format": "json"}""", "response_format"),
            (Chat, "{" + Hi + """, "top_logprobs": 2}""", "top_logprobs"),
            (Chat, "{" + Hi + """, "logprobs": false, "top_logprobs": 0}""", "top_logprobs"),
            (Chat, "{" + Hi + """, "tools": [{"type": "function", "function": {"name": "f"}}]}""", "tools"),
            (Chat, "{" + Hi + """, "frequency_penalty": 0.5}""", "frequency_penalty"),
            (Chat, "{" + Hi + """, "top_k": 5}""", "top_k"),
            (Completions, """{"prompt": "hi", "suffix": "end"}""", "suffix"),
            (Completions, """{"prompt": "hi", "presence_penalty": 1}""", "presence_penalty"),
            (Completions, """{"prompt": "hi", "top_k": 40}""", "top_k"),
        ];
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(store: null));

        var failures = new List<string>();
        foreach ((string path, string body, string param) in cases)
        {
            (int status, JsonElement error) = await PostAsync(server, path, body);
            if (status != 400 || error.GetProperty("type").GetString() != "invalid_request_error" || error.GetProperty("param").GetString() != param)
            {
                failures.Add($"{path} {body} -> {status} {error}");
            }
        }

        Assert.True(failures.Count == 0, string.Join("\n", failures));
        // The text format is served.
        using HttpResponseMessage text = await server.PostAsync(Chat, "{" + Hi + """, "max_tokens": 1, "response_format": {"type": "text"}}""");
        Assert.Equal(HttpStatusCode.OK, text.StatusCode);
    }

    [Fact]
    public async Task UnknownRouteAndWrongMethod_NoKeys_OpenAiError404And405()
    {
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(store: null));

        (int missing, JsonElement? missingError, _) = await SendAsync(server, HttpMethod.Get, "/v1/embeddings", token: null);
        (int wrong, JsonElement? wrongError, string allow) = await SendAsync(server, HttpMethod.Get, "/v1/completions", token: null);

        Assert.Equal(404, missing);
        Assert.Equal("invalid_request_error", missingError!.Value.GetProperty("type").GetString());
        Assert.Contains("GET /v1/embeddings", missingError.Value.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal("unknown_url", missingError.Value.GetProperty("code").GetString());
        Assert.Equal(405, wrong);
        Assert.Equal("method_not_allowed", wrongError!.Value.GetProperty("code").GetString());
        Assert.Contains("POST", wrongError.Value.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal("POST", allow);
    }

    [Fact]
    public async Task UnknownRouteAndWrongMethod_WithKeys_AuthenticationFirst()
    {
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(store: null), o => o with { ApiKeys = [Key] });

        // Without a key: 401 whether the route exists or not, and nothing in the body about routes or methods.
        foreach ((HttpMethod method, string path) in new[] { (HttpMethod.Get, "/v1/embeddings"), (HttpMethod.Get, "/v1/completions"), (HttpMethod.Delete, "/v1/models") })
        {
            (int status, JsonElement? error, string allow) = await SendAsync(server, method, path, token: null);
            Assert.Equal(401, status);
            Assert.Equal("invalid_api_key", error!.Value.GetProperty("code").GetString());
            Assert.Equal("", allow);
        }

        (int missing, JsonElement? missingError, _) = await SendAsync(server, HttpMethod.Get, "/v1/embeddings", Key);
        (int wrong, JsonElement? wrongError, _) = await SendAsync(server, HttpMethod.Delete, "/v1/models", Key);
        Assert.Equal(404, missing);
        Assert.Equal("unknown_url", missingError!.Value.GetProperty("code").GetString());
        Assert.Equal(405, wrong);
        Assert.Equal("method_not_allowed", wrongError!.Value.GetProperty("code").GetString());
    }

    [Fact]
    public async Task WrongJsonTypes_ParamNamesFieldAndPlainWords()
    {
        (string Path, string Body, string Param, string Expected)[] cases =
        [
            (Chat, "{" + Hi + """, "max_tokens": "5"}""", "max_tokens", "an integer"),
            (Completions, """{"prompt": "hi", "max_tokens": 1e400}""", "max_tokens", "an integer"),
            (Chat, "{" + Hi + """, "temperature": "hot"}""", "temperature", "a number"),
            (Chat, "{" + Hi + """, "stream": "yes"}""", "stream", "true or false"),
            (Chat, "{" + Hi + """, "stream_options": 5}""", "stream_options", "an object"),
            (Chat, """{"messages": "hi"}""", "messages", "an array"),
            (Chat, """{"messages": [1, 2]}""", "messages[0]", "an object"),
            (Chat, """{"messages": [{"role": 5, "content": "hi"}]}""", "messages[0].role", "a string"),
            (Chat, """{"model": 5, "messages": []}""", "model", "a string"),
            (Completions, """{"prompt": "hi", "seed": 1e400}""", "seed", "an integer"),
        ];
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(store: null));

        var failures = new List<string>();
        foreach ((string path, string body, string param, string expected) in cases)
        {
            (int status, JsonElement error) = await PostAsync(server, path, body);
            string message = error.GetProperty("message").GetString() ?? "";
            if (status != 400 || error.GetProperty("param").GetString() != param || !message.Contains(expected, StringComparison.Ordinal)
                || message.Contains("System.", StringComparison.Ordinal) || message.Contains('`', StringComparison.Ordinal))
            {
                failures.Add($"{body} -> {status} {error}");
            }
        }

        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Fact]
    public async Task ChatClient_UnsupportedOptions_SameRuleAndMessageAsServer()
    {
        (ChatOptions Options, string Body)[] cases =
        [
            (new ChatOptions { Tools = [AIFunctionFactory.Create(() => 1, "f")] }, """, "tools": [{"type": "function", "function": {"name": "f"}}]"""),
            (new ChatOptions { ResponseFormat = ChatResponseFormat.Json }, """, "response_format": {"type": "json_object"}"""),
            (new ChatOptions { FrequencyPenalty = 0.5f }, """, "frequency_penalty": 0.5"""),
            (new ChatOptions { PresencePenalty = 1f }, """, "presence_penalty": 1"""),
            (new ChatOptions { TopK = 5 }, """, "top_k": 5"""),
        ];
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(store: null));
        using var client = new KvFetcherChatClient(server.Engine);
        ChatMessage[] messages = [new(ChatRole.User, "hi")];

        foreach ((ChatOptions options, string body) in cases)
        {
            NotSupportedException refused = await Assert.ThrowsAsync<NotSupportedException>(() => client.GetResponseAsync(messages, options, Ct));
            (int status, JsonElement error) = await PostAsync(server, Chat, "{" + Hi + body + "}");
            Assert.Equal(400, status);
            Assert.Equal(error.GetProperty("message").GetString(), refused.Message);
        }

        // Text and the default options are served, the same on both sides.
        ChatResponse answer = await client.GetResponseAsync(messages, new ChatOptions { ResponseFormat = ChatResponseFormat.Text, MaxOutputTokens = 1 }, Ct);
        Assert.NotEmpty(answer.Messages);
    }

    [Fact]
    public async Task ChatClient_NonStreamingAnswer_HasResponseId()
    {
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(store: null));
        using var client = new KvFetcherChatClient(server.Engine);

        ChatResponse first = await client.GetResponseAsync([new(ChatRole.User, "hi")], new ChatOptions { MaxOutputTokens = 1 }, Ct);
        ChatResponse second = await client.GetResponseAsync([new(ChatRole.User, "hi")], new ChatOptions { MaxOutputTokens = 1 }, Ct);

        Assert.StartsWith("chatcmpl-", first.ResponseId, StringComparison.Ordinal);
        Assert.NotEqual(first.ResponseId, second.ResponseId);
        Assert.Equal(first.ResponseId, first.Messages.Single().MessageId);
    }

    private static async Task<(int Status, JsonElement Error)> PostAsync(LlmHarness server, string path, string body)
    {
        using HttpResponseMessage response = await server.PostAsync(path, body);
        string text = await response.Content.ReadAsStringAsync(Ct);
        JsonElement root = JsonDocument.Parse(text).RootElement;
        return ((int)response.StatusCode, root.TryGetProperty("error", out JsonElement error) ? error.Clone() : default);
    }

    /// <summary>A raw request; the status, the error object (null when the body is not one) and the <c>Allow</c> header.</summary>
    private static async Task<(int Status, JsonElement? Error, string Allow)> SendAsync(LlmHarness server, HttpMethod method, string path, string? token)
    {
        using var request = new HttpRequestMessage(method, path);
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        using HttpResponseMessage response = await server.Http.SendAsync(request, Ct);
        string text = await response.Content.ReadAsStringAsync(Ct);
        Assert.StartsWith("application/json", response.Content.Headers.ContentType?.MediaType ?? "", StringComparison.Ordinal);
        JsonElement? error = JsonDocument.Parse(text).RootElement.TryGetProperty("error", out JsonElement e) ? e.Clone() : null;
        return ((int)response.StatusCode, error, string.Join(", ", response.Content.Headers.Allow));
    }
}
