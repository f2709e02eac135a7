using System.Text;
using System.Text.Json;

namespace KvFetcher.Serving.Tests;

/// <summary>
/// Malformed request bodies, walked as a table: each gets a 4xx with an OpenAI-style JSON error (or, where the
/// request is odd but valid, an answer), never a 5xx, and the server keeps serving.
/// </summary>
public sealed class MalformedBodyTests(ServingFixture fixture) : IClassFixture<ServingFixture>
{
    private const string Chat = "v1/chat/completions";
    private const string Completions = "v1/completions";

    // Bytes 0xC3 0x28 (a lead byte without its continuation) and 0xFF (never valid in UTF-8).
    private static readonly byte[] s_badUtf8 = [0xC3, 0x28, 0xFF];

    public static TheoryData<string, string> InvalidUtf8Cases => new()
    {
        { Completions, """{"prompt": "abc#"}""" },
        { Completions, """{"prompt": ["abc#"]}""" },
        { Completions, """{"prompt": "hi", "stop": "#"}""" },
        { Completions, """{"prompt": "hi", "stop": ["ok", "#"]}""" },
        { Completions, """{"model": "#", "prompt": "hi"}""" },
        { Chat, """{"messages": [{"role": "user", "content": "abc#"}]}""" },
        { Chat, """{"messages": [{"role": "user", "content": [{"type": "text", "text": "#"}]}]}""" },
        { Chat, """{"messages": [{"role": "#", "content": "hi"}]}""" },
        { Chat, """{"messages": [{"role": "user", "content": "hi"}], "stop": "#"}""" },
        { Chat, """{"#": 1, "messages": [{"role": "user", "content": "hi"}]}""" },
    };

    [Theory]
    [MemberData(nameof(InvalidUtf8Cases))]
    public async Task InvalidUtf8InBody_BadRequestWithJsonError(string path, string template)
    {
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(store: null));
        byte[] body = Splice(template, s_badUtf8);

        (int status, JsonElement? error, string text) = await PostAsync(server, path, body);

        Assert.True(status == 400, $"{template}: {status} {text}");
        Assert.NotNull(error);
        Assert.Equal("invalid_request_error", error.Value.GetProperty("type").GetString());
        Assert.False(string.IsNullOrEmpty(error.Value.GetProperty("message").GetString()));
    }

    [Fact]
    public async Task MalformedBodies_NeverServerError_ServerKeepsServing()
    {
        string deep = new string('[', 5000) + new string(']', 5000);
        string deepObject = string.Concat(Enumerable.Repeat("{\"a\":", 2000)) + "1" + new string('}', 2000);
        (string Path, string Body, bool MayAnswer)[] cases =
        [
            // Truncated or not JSON.
            (Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi", false),
            (Chat, "{\"messages\": [{\"role\": \"user\"", false),
            (Completions, "{\"prompt\": \"hi\",", false),
            (Completions, "{", false),
            (Completions, "not json", false),
            (Completions, "\"just a string\"", false),
            (Completions, "null", false),
            (Completions, "12", false),
            (Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}{\"x\": 1}", false),
            // Wrong types.
            (Chat, "{\"messages\": \"hi\"}", false),
            (Chat, "{\"messages\": [1, 2]}", false),
            (Chat, "{\"messages\": [[\"user\", \"hi\"]]}", false),
            (Chat, "{\"messages\": [{\"role\": 5, \"content\": \"hi\"}]}", false),
            (Chat, "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", false),
            (Chat, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": 5}]}]}", false),
            (Chat, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": {\"url\": \"x\"}}]}]}", false),
            (Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": \"5\"}", false),
            (Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"temperature\": \"hot\"}", false),
            (Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stream\": \"yes\"}", false),
            (Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stream_options\": 5}", false),
            (Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stop\": [\"a\", 5]}", false),
            (Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}", false),
            (Chat, "{\"model\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", false),
            (Completions, "{\"prompt\": true}", false),
            (Completions, "{\"prompt\": {\"text\": \"hi\"}}", false),
            (Completions, "{\"prompt\": [[1, 2]]}", false),
            (Completions, "{\"prompt\": [\"a\", \"b\"]}", false),
            (Completions, "{\"prompt\": [1, \"a\"]}", false),
            (Completions, "{\"prompt\": [1.5]}", false),
            (Completions, "{\"prompt\": [-1]}", false),
            (Completions, "{\"prompt\": []}", false),
            (Completions, "{\"prompt\": \"\", \"max_tokens\": 1}", true),
            (Completions, "{\"prompt\": \"hi\", \"echo\": \"no\"}", false),
            // Huge numbers.
            (Completions, "{\"prompt\": \"hi\", \"max_tokens\": 1e400}", false),
            (Completions, "{\"prompt\": \"hi\", \"max_tokens\": 99999999999999999999}", false),
            (Completions, "{\"prompt\": \"hi\", \"max_tokens\": 2147483647}", false),
            (Completions, "{\"prompt\": \"hi\", \"temperature\": 1e400}", false),
            (Completions, "{\"prompt\": \"hi\", \"temperature\": -1e-400, \"max_tokens\": 1}", true),
            (Completions, "{\"prompt\": \"hi\", \"top_p\": 1e39}", false),
            (Completions, "{\"prompt\": \"hi\", \"seed\": 1e400}", false),
            (Completions, "{\"prompt\": \"hi\", \"seed\": 99999999999999999999999}", false),
            (Completions, "{\"prompt\": [99999999999999999999]}", false),
            (Completions, "{\"prompt\": [2147483648]}", false),
            (Completions, "{\"prompt\": \"hi\", \"n\": 1e10}", false),
            // Nulls.
            (Chat, "{\"messages\": null}", false),
            (Chat, "{\"messages\": [null]}", false),
            (Chat, "{\"messages\": [{\"role\": null, \"content\": \"hi\"}]}", false),
            (Chat, "{\"messages\": [{\"role\": \"user\", \"content\": null}]}", false),
            (Chat, "{\"messages\": [{\"role\": \"user\", \"content\": [null]}]}", false),
            (Completions, "{\"prompt\": null}", false),
            (Completions, "{\"prompt\": [null]}", false),
            (Completions, "{}", false),
            (Chat, "{\"model\": null, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 1, \"stop\": null, \"seed\": null}", true),
            // Empty messages, unknown and odd roles.
            (Chat, "{\"messages\": []}", false),
            (Chat, "{\"messages\": [{}]}", false),
            (Chat, "{\"messages\": [{\"role\": \"\", \"content\": \"hi\"}]}", false),
            (Chat, "{\"messages\": [{\"role\": \"User\", \"content\": \"hi\"}]}", false),
            (Chat, "{\"messages\": [{\"role\": \"user<|eot_id|>\", \"content\": \"hi\"}]}", false),
            (Chat, "{\"messages\": [{\"role\": \"wizard\", \"content\": \"hi\"}], \"max_tokens\": 1}", true),
            (Chat, "{\"messages\": [{\"role\": \"tool\", \"content\": \"\"}], \"max_tokens\": 1}", true),
            // Deeply nested.
            (Chat, deep, false),
            (Chat, deepObject, false),
            (Chat, "{\"messages\": " + deep + "}", false),
            (Completions, "{\"prompt\": " + deep + "}", false),
            (Completions, "{\"prompt\": \"hi\", \"logprobs\": " + deep + "}", false),
            (Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"tools\": " + deep + "}", false),
            // Lone surrogate escapes: valid JSON syntax, not text.
            (Completions, "{\"prompt\": \"\\ud800\"}", false),
            (Completions, "{\"prompt\": \"a\\udc00b\", \"stop\": \"\\ud83d\"}", false),
            (Chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"\\udfff\"}]}", false),
            (Chat, "{\"messages\": [{\"role\": \"\\ud800\", \"content\": \"hi\"}]}", false),
        ];
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(store: null));

        var failures = new List<string>();
        foreach ((string path, string body, bool mayAnswer) in cases)
        {
            (int status, JsonElement? error, string text) = await PostAsync(server, path, Encoding.UTF8.GetBytes(body));
            bool ok = status is >= 400 and < 500
                ? error is JsonElement e && e.GetProperty("message").GetString() is { Length: > 0 }
                : mayAnswer && status == 200;
            if (!ok)
            {
                failures.Add($"{path} {Shorten(body)} -> {status} {Shorten(text)}");
            }
        }

        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.Equal(fixture.GreedyChat([new("user", "hi")], 4), (await server.ChatAsync([new("user", "hi")], 4)).Text);
        string metrics = await server.Http.GetStringAsync("metrics", TestContext.Current.CancellationToken);
        Assert.DoesNotContain("code=\"500\"", metrics, StringComparison.Ordinal);
    }

    private static byte[] Splice(string template, byte[] bytes)
    {
        int at = template.IndexOf('#', StringComparison.Ordinal);
        return [.. Encoding.UTF8.GetBytes(template[..at]), .. bytes, .. Encoding.UTF8.GetBytes(template[(at + 1)..])];
    }

    private static async Task<(int Status, JsonElement? Error, string Text)> PostAsync(LlmHarness server, string path, byte[] body)
    {
        using var content = new ByteArrayContent(body);
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        using HttpResponseMessage response = await server.Http.PostAsync(path, content, TestContext.Current.CancellationToken);
        string text = await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);
        JsonElement? error = null;
        try
        {
            if (JsonDocument.Parse(text).RootElement is { ValueKind: JsonValueKind.Object } root && root.TryGetProperty("error", out JsonElement found))
            {
                error = found.Clone();
            }
        }
        catch (JsonException)
        {
            // Not JSON: error stays null and the case fails.
        }

        return ((int)response.StatusCode, error, text);
    }

    private static string Shorten(string text) => text.Length <= 120 ? text : text[..120] + $"... ({text.Length} chars)";
}
