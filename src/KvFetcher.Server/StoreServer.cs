using KvFetcher.Hosting;
using KvFetcher.Store;
using KvFetcher.Store.Disk;
using KvFetcher.Store.Remote;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace KvFetcher.Server;

/// <summary>
/// KvFetcher's network KV store: a Kestrel server (HTTP/1.1, and HTTP/2 over TLS) in front of a
/// <see cref="DiskKvStore"/>, guarded by a bearer token on every route but <c>/healthz</c> (and <c>/metrics</c> when public). See <see cref="StoreEndpoints"/> for the API.
/// </summary>
public sealed class StoreServer : IAsyncDisposable
{
    private readonly RunningApp _running;

    private StoreServer(RunningApp running) => _running = running;

    /// <summary>The bound addresses, ephemeral ports resolved (e.g. <c>http://127.0.0.1:41234/</c>).</summary>
    public IReadOnlyList<Uri> Addresses => _running.Addresses;

    /// <summary>The app's services: the routes it mapped, for tests that walk every one.</summary>
    internal IServiceProvider Services => _running.Services;

    /// <summary>Validates <paramref name="options"/>, opens the store in its data directory, binds and starts serving.</summary>
    public static async Task<StoreServer> StartAsync(StoreServerOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        DiskKvStore store = DiskKvStore.Open(new DiskKvStoreOptions
        {
            Directory = options.DataDirectory,
            CapacityBytes = options.CapacityBytes,
            Fsync = true,
        });
        try
        {
            return await StartAsync(options, store, ownsStore: true, cancellationToken);
        }
        catch
        {
            await store.DisposeAsync();
            throw;
        }
    }

    /// <summary>Serves <paramref name="store"/> (any implementation); disposes it with the server when <paramref name="ownsStore"/>.</summary>
    internal static async Task<StoreServer> StartAsync(StoreServerOptions options, IKvStore store, bool ownsStore, CancellationToken cancellationToken = default)
    {
        // Deny by default: every route needs the token but the public list (/healthz; /metrics with PublicMetrics).
        WebApplicationBuilder builder = KestrelApp.CreateBuilder(new KestrelAppOptions
        {
            ApplicationName = "kvfetch-server",
            Endpoints = options.ParseEndpoints(),
            CertificateFile = options.CertificateFile,
            CertificateKeyFile = options.CertificateKeyFile,
            // Cleartext carries one protocol (HTTP/2 would need prior knowledge); HTTP/1.1 measured faster.
            CleartextProtocols = options.CleartextProtocols,
            MaxRequestBodyBytes = options.MaxObjectBytes,
            Tokens = new BearerTokens(options.Token is null ? null : [options.Token]),
            WriteUnauthorizedAsync = context => StoreEndpoints.FailAsync(context, StatusCodes.Status401Unauthorized, "a valid bearer token is required"),
        });
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.RequestTimeout + TimeSpan.FromSeconds(5));
        // Objects of megabytes: socket reads and response segments of 64 KiB, not Kestrel's 4 KiB (see BulkMemoryPool).
        builder.Services.AddSingleton<IMemoryPoolFactory<byte>>(new BulkMemoryPool.Factory(maxPooledBytesPerPool: 64 << 20));
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            // Large objects: windows big enough that one 8 MB transfer never stalls on flow control.
            kestrel.Limits.Http2.InitialConnectionWindowSize = 32 << 20;
            kestrel.Limits.Http2.InitialStreamWindowSize = 16 << 20;
            // A streamed GET's next slice is read and hashed while the socket still sends the last ones (with Kestrel's
            // 64 KiB, every 256 KiB flush waited until the socket had taken it).
            kestrel.Limits.MaxResponseBufferSize = 1 << 20;
        });

        WebApplication app = builder.Build();
        var metrics = new ServerMetrics(app.CreateKvFetcherMeter(), store);
        ILogger logger = app.Services.GetRequiredService<ILogger<StoreServer>>();
        // Every request, refused or not: counted by route and status, and timed.
        app.UseRequestObserver(metrics.ObserveRequest);
        app.UseBearerAuthentication();
        app.Use((context, next) => GuardAsync(context, next, options.RequestTimeout, logger));
        new StoreEndpoints(store, options, metrics).Map(app);

        return new StoreServer(await KestrelApp.StartAsync(app, ownsStore ? store : null, stopTimeout: null, cancellationToken));
    }

    /// <summary>Stops accepting connections and waits for requests in flight to finish (cancel to cut them short).</summary>
    public Task StopAsync(CancellationToken cancellationToken = default) => _running.StopAsync(cancellationToken);

    /// <summary>Stops (requests in flight finish within the host's shutdown timeout), then disposes the store if owned.</summary>
    public ValueTask DisposeAsync() => _running.DisposeAsync();

    /// <summary>Every authorized request: the per-request deadline and the mapping of store failures to status codes.</summary>
    private static async Task GuardAsync(HttpContext context, RequestDelegate next, TimeSpan timeout, ILogger logger)
    {
        CancellationToken aborted = context.RequestAborted;
        (int Status, string Message)? failure = null;
        using (var deadline = CancellationTokenSource.CreateLinkedTokenSource(aborted))
        {
            deadline.CancelAfter(timeout);
            context.RequestAborted = deadline.Token;
            try
            {
                await next(context);
            }
            catch (OperationCanceledException) when (deadline.IsCancellationRequested && !aborted.IsCancellationRequested)
            {
                failure = (StatusCodes.Status503ServiceUnavailable, $"the request took longer than {timeout.TotalSeconds:0.###} s");
                ServerLog.RequestTimedOut(logger, context.Request.Method, context.Request.Path.Value ?? "", timeout.TotalSeconds);
            }
            catch (OperationCanceledException) when (aborted.IsCancellationRequested)
            {
                // The client went away; nobody is listening for an answer.
            }
            catch (KvStoreException ex)
            {
                failure = (StoreProtocol.StatusOf(ex), ex.Message);
                ServerLog.StoreFailed(logger, context.Request.Method, context.Request.Path.Value ?? "", failure.Value.Status, ex);
            }
            catch (Microsoft.AspNetCore.Http.BadHttpRequestException ex)
            {
                failure = (ex.StatusCode, ex.Message);
            }
            finally
            {
                context.RequestAborted = aborted;
            }
        }

        // Written under the connection's own token: the deadline's may be the one that fired.
        if (failure is (int status, string message))
        {
            await StoreEndpoints.FailAsync(context, status, message);
        }
    }
}
