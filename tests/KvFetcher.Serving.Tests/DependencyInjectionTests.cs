using System.Collections.Concurrent;
using KvFetcher.Serving.Extensions;
using KvFetcher.Serving.Scheduling;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace KvFetcher.Serving.Tests;

/// <summary>
/// <c>AddKvFetcher</c> in a fresh app: bad options fail at the host's start, nothing blocks a resolve, the engine logs
/// through the host's logging, and the container disposes synchronously and asynchronously.
/// </summary>
public sealed class DependencyInjectionTests(ServingFixture fixture) : IClassFixture<ServingFixture>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task StartAsync_InvalidOptions_FailsAtStartNamingTheProblem()
    {
        HostApplicationBuilder builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings());
        builder.Services.AddKvFetcher(o => o.ModelDirectory = "");
        using IHost host = builder.Build();

        OptionsValidationException error = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync(Ct));

        Assert.Contains("model directory", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task StartAsync_MissingModel_FailsAtStart()
    {
        HostApplicationBuilder builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings());
        string missing = Path.Combine(Path.GetTempPath(), "kvf-no-such-model-" + Guid.NewGuid().ToString("N"));
        builder.Services.AddKvFetcher(o => o.ModelDirectory = missing);
        using IHost host = builder.Build();

        Exception error = await Assert.ThrowsAnyAsync<Exception>(() => host.StartAsync(Ct));

        Assert.Contains(missing, error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Host_WithCapturingLogger_EngineLogsThroughHostLogging()
    {
        var logs = new CapturingLoggerProvider();
        HostApplicationBuilder builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings());
        builder.Logging.AddProvider(logs).SetMinimumLevel(LogLevel.Information);
        builder.Services.AddKvFetcher(o =>
        {
            o.ModelDirectory = fixture.ModelDirectory;
            o.Engine = KvFetcher.Runtime.EngineKind.Cpu;
        });
        using IHost host = builder.Build();
        await host.StartAsync(Ct);

        // Started: the engine has loaded, so it resolves at once.
        Assert.True(host.Services.GetRequiredService<KvFetcherEngineLoader>().IsLoaded);
        IChatClient client = host.Services.GetRequiredService<IChatClient>();
        await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Hello")], new ChatOptions { Temperature = 0, MaxOutputTokens = 2 }, Ct);
        await host.StopAsync(Ct);

        Assert.Contains(logs.Entries, e => e.EventId.Name == "EngineStarted" && e.Category == typeof(KvFetcherEngine).FullName);
        (string Category, EventId EventId, string Message) request = Assert.Single(logs.Entries, e => e.EventId.Name == "RequestCompleted");
        Assert.Equal(1201, request.EventId.Id);
        Assert.Contains("reused", request.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Dispose_PlainServiceProvider_DisposesTheLoadedEngineSynchronously()
    {
        KvFetcherEngine engine;
        using (ServiceProvider services = Services().BuildServiceProvider())
        {
            IChatClient client = services.GetRequiredService<IChatClient>();
            await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Hello")], new ChatOptions { Temperature = 0, MaxOutputTokens = 1 }, Ct);
            engine = services.GetRequiredService<KvFetcherEngine>();
        }

        Assert.Throws<ObjectDisposedException>(() => engine.Submit(new GenerationRequest { Prompt = [1, 2, 3] }, Ct));
    }

    [Fact]
    public async Task DisposeAsync_AwaitUsing_DisposesTheLoadedEngine()
    {
        KvFetcherEngine engine;
        await using (ServiceProvider services = Services().BuildServiceProvider())
        {
            engine = await services.GetRequiredService<KvFetcherEngineLoader>().GetEngineAsync(Ct);
        }

        Assert.Throws<ObjectDisposedException>(() => engine.Submit(new GenerationRequest { Prompt = [1, 2, 3] }, Ct));
    }

    [Fact]
    public void Resolve_BeforeTheEngineLoads_ReturnsAtOnceWithoutLoading()
    {
        using ServiceProvider services = Services().BuildServiceProvider();

        IChatClient client = services.GetRequiredService<IChatClient>();

        Assert.Equal(ServingFixture.ModelId, client.GetService<ChatClientMetadata>()!.DefaultModelId);
        Assert.False(services.GetRequiredService<KvFetcherEngineLoader>().IsLoaded);
        InvalidOperationException error = Assert.Throws<InvalidOperationException>(() => services.GetRequiredService<KvFetcherEngine>());
        Assert.Contains("GetEngineAsync", error.Message, StringComparison.Ordinal);
    }

    private ServiceCollection Services()
    {
        var services = new ServiceCollection();
        services.AddKvFetcher(o =>
        {
            o.ModelDirectory = fixture.ModelDirectory;
            o.Engine = KvFetcher.Runtime.EngineKind.Cpu;
        });
        return services;
    }

    private sealed class CapturingLoggerProvider : ILoggerProvider
    {
        public ConcurrentQueue<(string Category, EventId EventId, string Message)> Entries { get; } = new();

        public ILogger CreateLogger(string categoryName) => new Logger(categoryName, Entries);

        public void Dispose()
        {
        }

        private sealed class Logger(string category, ConcurrentQueue<(string, EventId, string)> entries) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
                entries.Enqueue((category, eventId, formatter(state, exception)));
        }
    }
}
