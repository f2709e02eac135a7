using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace KvFetcher.Server.Hosting;

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

    /// <summary>Starts <paramref name="app"/> (disposing it when that fails) and returns its bound addresses, ephemeral ports resolved.</summary>
    public static async Task<IReadOnlyList<Uri>> StartAsync(WebApplication app, CancellationToken cancellationToken = default)
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
        return [.. bound.Select(a => new Uri(a))];
    }

    /// <summary>A host lifetime that leaves Ctrl+C and SIGTERM to the owner (the CLI stops the server itself).</summary>
    private sealed class ExplicitLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
