using System.Diagnostics;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Configuration.Memory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;

namespace KvFetcher.Hosting;

/// <summary>
/// How KvFetcher's servers (<c>kvfetch serve</c>, <c>kvfetch serve-llm</c>) host Kestrel: a slim, NativeAOT-friendly
/// application with configurable console logs (see <see cref="CreateBuilder(string)"/>) whose owner (the CLI, a test) starts and stops it, not the host's own
/// signal handlers; bound to its <see cref="ListenEndpoint"/>s with the request limits both servers share, and deny by
/// default (<see cref="BearerAuthentication"/>, with <see cref="PublicRoutes"/> the only routes open to anonymous callers).
/// A server's pipeline: <see cref="UseRequestObserver"/> (sees every request, refused or not),
/// <see cref="BearerAuthentication.UseBearerAuthentication"/>, its own routes, <see cref="PublicRoutes.MapHealthAndMetrics"/>;
/// then <see cref="StartAsync"/>.
/// </summary>
public static class KestrelApp
{
    /// <summary>
    /// A slim builder (see <see cref="CreateBuilder(string)"/>) listening on <see cref="KestrelAppOptions.Endpoints"/>
    /// (https ones with the PEM certificate, loaded here), without a <c>Server</c> header, with a limit on request bodies,
    /// and with the bearer authentication scheme and the fallback policy that requires it on every route but the
    /// public list. Throws <see cref="ArgumentException"/> when the certificate does not load.
    /// </summary>
    public static WebApplicationBuilder CreateBuilder(KestrelAppOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        X509Certificate2? certificate = ListenEndpoint.LoadCertificate(options.Endpoints, options.CertificateFile, options.CertificateKeyFile);
        WebApplicationBuilder builder = CreateBuilder(options.ApplicationName);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = options.MaxRequestBodyBytes;
            ListenEndpoint.Bind(kestrel, options.Endpoints, certificate, options.CleartextProtocols);
        });
        builder.Services.AddBearerAuthentication(options.Tokens, options.WriteUnauthorizedAsync);
        builder.AddKvFetcherMetrics(options.ApplicationName);
        return builder;
    }

    /// <summary>The logging defaults, below every configuration source: KvFetcher's own events from Information, the rest from Warning.</summary>
    public static readonly IReadOnlyDictionary<string, string?> LoggingDefaults = new Dictionary<string, string?>
    {
        ["Logging:LogLevel:Default"] = "Warning",
        ["Logging:LogLevel:KvFetcher"] = "Information",
    };

    /// <summary>
    /// A slim builder: console logging whose levels and formatter come from configuration (<c>Logging:LogLevel:*</c>,
    /// <c>Logging:Console:FormatterName</c> = <c>simple</c> (single-line by default) | <c>json</c> | <c>systemd</c>, also
    /// as environment variables such as <c>Logging__Console__FormatterName=json</c>) over <see cref="LoggingDefaults"/>;
    /// lifetime left to the owner.
    /// </summary>
    public static WebApplicationBuilder CreateBuilder(string applicationName)
    {
        // No reload on change: the configuration files would be watched through a recursive watch of the working
        // directory, one inotify watch per folder below it (about 800 in a checkout of this repository, and enough in a
        // home directory to run out of the user's watches). They are read once, at start.
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            Args = ["--hostBuilder:reloadConfigOnChange=false"],
            ApplicationName = applicationName,
        });
        builder.Configuration.Sources.Insert(0, new MemoryConfigurationSource { InitialData = LoggingDefaults });
        builder.Logging.ClearProviders();
        // Before AddConsole, so that Logging:Console:FormatterOptions in configuration still wins.
        builder.Services.Configure<SimpleConsoleFormatterOptions>(o => o.SingleLine = true);
        builder.Logging.AddConsole();
        // The slim builder asks for the simple formatter in code, which would beat configuration: configuration wins again.
        ConfigurationManager configuration = builder.Configuration;
        builder.Services.Configure<ConsoleLoggerOptions>(o =>
        {
            if (configuration["Logging:Console:FormatterName"] is { Length: > 0 } formatter)
            {
                o.FormatterName = formatter;
            }
        });
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
            PublicRoutes.CheckAnonymousRoutes(app);
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

    /// <summary>
    /// Calls <paramref name="observe"/> once per request when its response is done, whether it was answered, refused or
    /// failed: with the matched route's display name (<c>other</c> when none matched), the status code and the time taken.
    /// Add it first, so that it also sees what authentication refuses.
    /// </summary>
    public static IApplicationBuilder UseRequestObserver(this IApplicationBuilder app, Action<string, int, TimeSpan> observe)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(observe);
        return app.Use(async (context, next) =>
        {
            long start = Stopwatch.GetTimestamp();
            try
            {
                await next(context).ConfigureAwait(false);
            }
            finally
            {
                observe(context.GetEndpoint()?.DisplayName ?? "other", context.Response.StatusCode, Stopwatch.GetElapsedTime(start));
            }
        });
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
