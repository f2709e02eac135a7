using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace KvFetcher.Hosting;

/// <summary>
/// How KvFetcher's servers (<c>kvfetch serve</c>, <c>kvfetch serve-llm</c>) host Kestrel: a slim, NativeAOT-friendly
/// application with one-line warning logs whose owner (the CLI, a test) starts and stops it, not the host's own
/// signal handlers.
/// </summary>
public static class KestrelApp
{
    /// <summary>A slim builder: single-line console logging at warning level, lifetime left to the owner.</summary>
    public static WebApplicationBuilder CreateBuilder(string applicationName)
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ApplicationName = applicationName });
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Services.AddSingleton<IHostLifetime, ExplicitLifetime>();
        return builder;
    }

    /// <summary>
    /// Starts <paramref name="app"/> (disposing it if that fails) and returns it running, with the addresses it bound
    /// (ephemeral ports resolved). Disposing the result stops the app, within <paramref name="stopTimeout"/> when given,
    /// disposes it, then disposes <paramref name="owned"/> (what the app serves, when the server owns it).
    /// </summary>
    public static async Task<RunningApp> StartAsync(WebApplication app, IAsyncDisposable? owned, TimeSpan? stopTimeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(app);
        try
        {
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await app.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        ICollection<string> bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
        return new RunningApp(app, [.. bound.Select(a => new Uri(a))], owned, stopTimeout);
    }

    private sealed class ExplicitLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}

/// <summary>A started Kestrel app: stopped once, then disposed with what it serves (see <see cref="KestrelApp.StartAsync"/>).</summary>
public sealed class RunningApp : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly IAsyncDisposable? _owned;
    private readonly TimeSpan? _stopTimeout;
    private int _stopped;
    private int _disposed;

    internal RunningApp(WebApplication app, IReadOnlyList<Uri> addresses, IAsyncDisposable? owned, TimeSpan? stopTimeout)
    {
        _app = app;
        Addresses = addresses;
        _owned = owned;
        _stopTimeout = stopTimeout;
    }

    /// <summary>The addresses the app listens on.</summary>
    public IReadOnlyList<Uri> Addresses { get; }

    /// <summary>The app's services (its mapped routes are its <c>EndpointDataSource</c>).</summary>
    public IServiceProvider Services => _app.Services;

    /// <summary>Stops accepting connections and waits for requests in flight (cancel to cut them short). Only the first call stops.</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 0)
        {
            await _app.StopAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        try
        {
            using var deadline = _stopTimeout is { } timeout ? new CancellationTokenSource(timeout) : null;
            await StopAsync(deadline?.Token ?? CancellationToken.None).ConfigureAwait(false);
        }
        finally
        {
            await _app.DisposeAsync().ConfigureAwait(false);
            if (_owned is not null)
            {
                await _owned.DisposeAsync().ConfigureAwait(false);
            }
        }
    }
}
