using KvFetcher.Store.Disk;
using KvFetcher.Store.Redis;
using KvFetcher.Store.Remote;
using KvFetcher.Store.Resilience;
using KvFetcher.Store.Telemetry;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvFetcher.Store;

/// <summary>Opens a store from one string, the form every command's <c>--store</c> takes.</summary>
public static class KvStores
{
    /// <summary>The environment variable holding the bearer token for <c>http(s)://</c> stores.</summary>
    public const string TokenVariable = "KVFETCH_TOKEN";

    /// <summary>
    /// <c>DIR</c> (or <c>file:DIR</c>): the embedded disk store; <c>http(s)://HOST:PORT</c>: a <c>kvfetch serve</c>
    /// server (token from <paramref name="token"/> or $KVFETCH_TOKEN); <c>redis://HOST:PORT[,HOST:PORT...]</c>: Redis or
    /// Redis Cluster (the nodes are discovered from any of them). Every store comes behind a
    /// <see cref="ResilientKvStore"/> (deadlines and a circuit breaker). A remote store that is down or silent is still
    /// returned: it is unavailable (calls fail fast, callers compute) until it answers;
    /// <see cref="CheckAsync"/> tells whether it answers now.
    /// </summary>
    public static Task<IKvStore> OpenAsync(string location, string? token = null, long? capacityBytes = null, CancellationToken cancellationToken = default) =>
        OpenAsync(location, NullLoggerFactory.Instance, token, capacityBytes, cancellationToken);

    /// <summary>
    /// As <see cref="OpenAsync(string, string?, long?, CancellationToken)"/>, logging through <paramref name="loggerFactory"/>:
    /// the breaker's openings and closings, and a remote store's retries.
    /// </summary>
    public static async Task<IKvStore> OpenAsync(string location, ILoggerFactory loggerFactory, string? token = null, long? capacityBytes = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(loggerFactory);
        IKvStore inner = await OpenInnerAsync(location, token, capacityBytes, loggerFactory, cancellationToken).ConfigureAwait(false);
        return new ResilientKvStore(inner, logger: loggerFactory.CreateLogger<ResilientKvStore>());
    }

    /// <summary>
    /// Asks <paramref name="store"/> one lookup within its lookup deadline: null when it answers, otherwise one line
    /// saying why not (for a command that reports an unreachable store at start and goes on computing).
    /// </summary>
    public static async Task<string?> CheckAsync(IKvStore store, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(store);
        if (store is InstrumentedKvStore instrumented)
        {
            store = instrumented.Inner;
        }

        if (store is ResilientKvStore resilient)
        {
            return await resilient.CheckAsync(cancellationToken).ConfigureAwait(false);
        }

        await using var guarded = new ResilientKvStore(store, ownsInner: false);
        return await guarded.CheckAsync(cancellationToken).ConfigureAwait(false);
    }

    private static async Task<IKvStore> OpenInnerAsync(string location, string? token, long? capacityBytes, ILoggerFactory loggerFactory, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(location);
        if (location.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || location.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
        {
            return new HttpKvStore(new HttpKvStoreOptions
            {
                BaseAddress = new Uri(location),
                Token = token ?? Environment.GetEnvironmentVariable(TokenVariable),
            }, loggerFactory.CreateLogger<HttpKvStore>());
        }

        if (location.StartsWith("redis://", StringComparison.OrdinalIgnoreCase))
        {
            string endpoints = location["redis://".Length..].TrimEnd('/');
            return await RedisKvStore.ConnectAsync(new RedisKvStoreOptions { ConnectionString = endpoints }, cancellationToken).ConfigureAwait(false);
        }

        string directory = location.StartsWith("file:", StringComparison.OrdinalIgnoreCase) ? location[5..] : location;
        return DiskKvStore.Open(new DiskKvStoreOptions { Directory = Path.GetFullPath(directory), CapacityBytes = capacityBytes });
    }
}
