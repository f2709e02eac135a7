using KvFetcher.Serving.Extensions;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;

namespace KvFetcher.Serving.Tests;

/// <summary>The in-process chat client refuses a prompt that cannot fit the context before tokenizing it.</summary>
public sealed class ChatClientLimitTests(ServingFixture fixture) : IClassFixture<ServingFixture>
{
    [Fact]
    public async Task GetResponse_SevenMegabyteMessage_ArgumentExceptionBeforeTokenizing()
    {
        await using ServiceProvider services = new ServiceCollection()
            .AddKvFetcher(o =>
            {
                o.ModelDirectory = fixture.ModelDirectory;
                o.Engine = KvFetcher.Runtime.EngineKind.Cpu;
            })
            .BuildServiceProvider();
        IChatClient client = services.GetRequiredService<IChatClient>();
        // The engine loads asynchronously (no resolve blocks on it): wait for it here.
        KvFetcherEngine engine = await services.GetRequiredService<KvFetcherEngineLoader>().GetEngineAsync(TestContext.Current.CancellationToken);
        ChatMessage[] messages = [new(ChatRole.User, new string('x', 7_000_000))];

        // A hang guard: tokenizing first would take seconds, and the prompt could never fit anyway.
        var e = await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync(messages, cancellationToken: TestContext.Current.CancellationToken)
            .WaitAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken));

        Assert.Contains($"{engine.MaxPromptCharacters}", e.Message, StringComparison.Ordinal);
    }
}
