using System.ClientModel;
using OpenAI;
using OpenAI.Chat;

namespace KvFetcher.Serving.Tests;

/// <summary>The official OpenAI .NET library (from NuGet) talking to serve-llm, streaming and not.</summary>
public sealed class OpenAiClientTests(ServingFixture fixture) : IClassFixture<ServingFixture>, IAsyncDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("kvf-serving-openai-").FullName;

    public ValueTask DisposeAsync()
    {
        Directory.Delete(_directory, recursive: true);
        return ValueTask.CompletedTask;
    }

    [Fact]
    public async Task OfficialClient_ChatStreamingAndNot_SameGreedyAnswerAndReuseReported()
    {
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(_directory));
        var client = new ChatClient(ServingFixture.ModelId, new ApiKeyCredential("any-key-works-here"),
            new OpenAIClientOptions { Endpoint = new Uri(server.Server.Addresses[0], "v1") });
        ChatMessage[] messages = [new SystemChatMessage(fixture.Document), new UserChatMessage("What should be done after reverting?")];
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 16 };
        string expected = fixture.GreedyChat(fixture.Question("What should be done after reverting?"), 16);

        ChatCompletion completion = (await client.CompleteChatAsync(messages, options, TestContext.Current.CancellationToken)).Value;
        await server.Engine.WhenPublishedAsync();
        var streamed = new System.Text.StringBuilder();
        ChatTokenUsage? streamedUsage = null;
        ChatFinishReason? streamedFinish = null;
        await foreach (StreamingChatCompletionUpdate update in client.CompleteChatStreamingAsync(messages, options, TestContext.Current.CancellationToken))
        {
            foreach (ChatMessageContentPart part in update.ContentUpdate)
            {
                streamed.Append(part.Text);
            }

            streamedUsage ??= update.Usage;
            streamedFinish ??= update.FinishReason;
        }

        Assert.Equal(expected, completion.Content[0].Text);
        Assert.Equal(ChatMessageRole.Assistant, completion.Role);
        Assert.Equal(expected, streamed.ToString());
        Assert.Equal(completion.FinishReason, streamedFinish);
        Assert.Equal(0, completion.Usage.InputTokenDetails.CachedTokenCount);
        Assert.Equal(fixture.ChatTokens(fixture.Question("What should be done after reverting?")).Length, completion.Usage.InputTokenCount);
        Assert.NotNull(streamedUsage);
        Assert.True(streamedUsage.InputTokenDetails.CachedTokenCount >= 3 * 256, $"cached {streamedUsage.InputTokenDetails.CachedTokenCount}");
        Assert.Equal(completion.Usage.OutputTokenCount, streamedUsage.OutputTokenCount);
    }

    [Fact]
    public async Task OfficialClient_StopSequence_TextEndsBeforeIt()
    {
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(store: null));
        var client = new ChatClient(ServingFixture.ModelId, new ApiKeyCredential("any-key-works-here"),
            new OpenAIClientOptions { Endpoint = new Uri(server.Server.Addresses[0], "v1") });
        // The first question whose greedy answer is long enough to cut (how long an answer is, is the model's habit).
        string question = "";
        string full = "";
        foreach (string candidate in (string[])["Explain the git revert command.", "How do I read a file in Python?", "What does the kernel do at boot?", "Describe a hash in Perl."])
        {
            (question, full) = (candidate, fixture.GreedyChat([new("user", candidate)], 24));
            if (full.Length > 12)
            {
                break;
            }
        }

        Assert.True(full.Length > 12, $"every greedy answer is too short to cut, the last: '{full}'");
        // A stop sequence from the middle of the answer (it spans token boundaries in general).
        string stop = full.Substring(full.Length / 2, 4);
        string expected = full[..full.IndexOf(stop, StringComparison.Ordinal)];
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 24, StopSequences = { stop } };

        ChatCompletion completion = (await client.CompleteChatAsync([new UserChatMessage(question)], options, TestContext.Current.CancellationToken)).Value;
        var streamed = new System.Text.StringBuilder();
        await foreach (StreamingChatCompletionUpdate update in client.CompleteChatStreamingAsync([new UserChatMessage(question)], options,
            TestContext.Current.CancellationToken))
        {
            foreach (ChatMessageContentPart part in update.ContentUpdate)
            {
                streamed.Append(part.Text);
            }
        }

        Assert.Equal(expected, completion.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, completion.FinishReason);
        Assert.Equal(expected, streamed.ToString());
    }
}
