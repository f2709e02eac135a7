using KvFetcher.Store.Disk;
using KvFetcher.Store.Redis;
using KvFetcher.Store.Remote;

namespace KvFetcher.Store;

/// <summary>Opens a store from one string, the form every command's <c>--store</c> takes.</summary>
public static class KvStores
{
    /// <summary>The environment variable holding the bearer token for <c>http(s)://</c> stores.</summary>
    public const string TokenVariable = "KVFETCH_TOKEN";

    /// <summary>
    /// <c>DIR</c> (or <c>file:DIR</c>): the embedded disk store; <c>http(s)://HOST:PORT</c>: a <c>kvfetch serve</c>
    /// server (token from <paramref name="token"/> or $KVFETCH_TOKEN); <c>redis://HOST:PORT[,HOST:PORT...]</c>: Redis or
    /// Redis Cluster (the nodes are discovered from any of them).
    /// </summary>
    public static async Task<IKvStore> OpenAsync(string location, string? token = null, long? capacityBytes = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(location);
        if (location.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || location.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
        {
            return new HttpKvStore(new HttpKvStoreOptions
            {
                BaseAddress = new Uri(location),
                Token = token ?? Environment.GetEnvironmentVariable(TokenVariable),
            });
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
