using System.Diagnostics.Metrics;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace KvFetcher.Serving.Extensions;

/// <summary>
/// Loads the container's <see cref="KvFetcherEngine"/> once, asynchronously, and disposes it with the container:
/// <c>AddKvFetcher</c>'s hosted service starts the load when the host starts (so a model or store that cannot be opened
/// fails <c>StartAsync</c>), and without a host the first request through the <see cref="Microsoft.Extensions.AI.IChatClient"/>
/// starts it; resolving a service never blocks on it. Disposes synchronously or asynchronously (a plain
/// <c>ServiceProvider</c>'s <c>Dispose()</c> or <c>await using</c>).
/// </summary>
public sealed class KvFetcherEngineLoader : IAsyncDisposable, IDisposable
{
    private readonly KvFetcherOptions _options;
    private readonly ILoggerFactory? _loggerFactory;
    private readonly IMeterFactory? _meterFactory;
    private readonly Lock _gate = new();
    private readonly CancellationTokenSource _disposing = new();
    private Task<KvFetcherEngine>? _loading;
    private int _disposed;

    public KvFetcherEngineLoader(IOptions<KvFetcherOptions> options, ILoggerFactory? loggerFactory = null, IMeterFactory? meterFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options.Value;
        _loggerFactory = loggerFactory;
        _meterFactory = meterFactory;
    }

    /// <summary>The options the engine is (or will be) started with.</summary>
    public KvFetcherOptions Options => _options;

    /// <summary>Whether the engine has loaded (then <see cref="Engine"/> returns it).</summary>
    public bool IsLoaded => Volatile.Read(ref _loading) is { IsCompletedSuccessfully: true };

    /// <summary>The loaded engine.</summary>
    /// <exception cref="InvalidOperationException">It has not loaded yet: start the host, or await <see cref="GetEngineAsync"/>.</exception>
    public KvFetcherEngine Engine => Volatile.Read(ref _loading) is { IsCompletedSuccessfully: true } loaded
        ? loaded.Result
        : throw new InvalidOperationException(
            "The KvFetcher engine loads asynchronously and has not loaded yet: start the host (AddKvFetcher's hosted service loads it) or await KvFetcherEngineLoader.GetEngineAsync() first.");

    /// <summary>The engine, loading it on the first call (later calls share that load; a failed load is not retried).</summary>
    public Task<KvFetcherEngine> GetEngineAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        Task<KvFetcherEngine>? loading = Volatile.Read(ref _loading);
        if (loading is null)
        {
            lock (_gate)
            {
                loading = _loading ??= KvFetcherEngine.StartAsync(_options, _loggerFactory, _meterFactory, _disposing.Token);
            }
        }

        return loading.WaitAsync(cancellationToken);
    }

    /// <summary>Waits for a load in progress (cancelled) and disposes the engine.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _disposing.CancelAsync().ConfigureAwait(false);
        Task<KvFetcherEngine>? loading;
        lock (_gate)
        {
            loading = _loading;
        }

        if (loading is not null)
        {
            try
            {
                KvFetcherEngine engine = await loading.ConfigureAwait(false);
                await engine.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception) when (!loading.IsCompletedSuccessfully)
            {
                // The load failed or was cancelled: nothing to dispose, and whoever awaited it was told.
            }
        }

        _disposing.Dispose();
    }

    /// <summary>Loads the engine when the host starts: a model or store that cannot be opened fails the host's start.</summary>
    internal sealed class Startup(KvFetcherEngineLoader loader) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken) => loader.GetEngineAsync(cancellationToken);

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
