using KvFetcher.Serving.Extensions;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace KvFetcher.Serving.Tests;

/// <summary><see cref="IChatClient"/> in-process, registered with <c>AddKvFetcher</c> from configuration.</summary>
public sealed class ChatClientTests(ServingFixture fixture) : IClassFixture<ServingFixture>, IAsyncDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("kvf-serving-chatclient-").FullName;

    public ValueTask DisposeAsync()
    {
        Directory.Delete(_directory, recursive: true);
        return ValueTask.CompletedTask;
    }

    [Fact]
    public async Task AddKvFetcher_FromConfiguration_ChatClientAnswersAndReuses()
    {
        IConfiguration configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["KvFetcher:ModelDirectory"] = fixture.ModelDirectory,
            ["KvFetcher:Store"] = _directory,
            ["KvFetcher:Variant"] = "exact",
            ["KvFetcher:MaxActiveSessions"] = "2",
            ["KvFetcher:FetchTimeout"] = "00:00:05",
            ["KvFetcher:ReuseStrategy"] = "fetch", // every stored chunk fetched, so the reuse is counted exactly
        }).Build();
        await using ServiceProvider services = new ServiceCollection().AddKvFetcher(configuration.GetSection("KvFetcher")).BuildServiceProvider();
        IChatClient client = services.GetRequiredService<IChatClient>();
        ChatMessage[] messages = [new(ChatRole.System, fixture.Document), new(ChatRole.User, "What is this about?")];
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 10 };
        string expected = fixture.GreedyChat(fixture.Question("What is this about?"), 10);

        ChatResponse first = await client.GetResponseAsync(messages, options, TestContext.Current.CancellationToken);
        await services.GetRequiredService<KvFetcherEngine>().WhenPublishedAsync();
        var streamed = new System.Text.StringBuilder();
        UsageDetails? usage = null;
        await foreach (ChatResponseUpdate update in client.GetStreamingResponseAsync(messages, options, TestContext.Current.CancellationToken))
        {
            streamed.Append(update.Text);
            usage ??= update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details;
        }

        Assert.Equal(2, services.GetRequiredService<IOptions<KvFetcherOptions>>().Value.MaxActiveSessions);
        Assert.Equal(expected, first.Text);
        Assert.Equal(0, first.Usage!.CachedInputTokenCount);
        Assert.Equal(expected, streamed.ToString());
        Assert.NotNull(usage);
        Assert.True(usage.CachedInputTokenCount >= 3 * 256, $"cached {usage.CachedInputTokenCount}");
        Assert.Equal(usage.CachedInputTokenCount, usage.AdditionalCounts!["kvfetcher.reused_tokens"]);
        Assert.Equal("kvf-code-32l", client.GetService<ChatClientMetadata>()!.DefaultModelId);
    }

    [Fact]
    public void AddKvFetcher_InvalidOptions_NamesTheProblem()
    {
        using ServiceProvider services = new ServiceCollection().AddKvFetcher(o => o.ModelDirectory = "").BuildServiceProvider();

        OptionsValidationException error = Assert.Throws<OptionsValidationException>(() => services.GetRequiredService<IChatClient>());
        Assert.Contains("model directory", error.Message, StringComparison.Ordinal);
    }
}
