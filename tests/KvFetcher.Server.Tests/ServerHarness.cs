using System.Buffers;
using System.Net.Http.Headers;
using KvFetcher.Store;
using KvFetcher.Store.Disk;
using KvFetcher.Store.Remote;

namespace KvFetcher.Server.Tests;

/// <summary>
/// A real <see cref="StoreServer"/> over a <see cref="DiskKvStore"/> in a fresh temp directory, on an ephemeral loopback
/// port, with clients for it. Disposing stops the server and deletes the directory.
/// </summary>
internal sealed class ServerHarness : IAsyncDisposable
{
    public const string Token = "test-token-0123456789abcdef";

    private ServerHarness(string directory, StoreServer server, StoreServerOptions options)
    {
        DataDirectory = directory;
        Server = server;
        Options = options;
    }

    public string DataDirectory { get; }

    public StoreServer Server { get; }

    public StoreServerOptions Options { get; }

    public Uri Address => Server.Addresses[0];

    /// <summary>Starts a server; <paramref name="configure"/> may change the options; <paramref name="wrap"/> may put a store in front of the disk store.</summary>
    public static async Task<ServerHarness> StartAsync(Func<StoreServerOptions, StoreServerOptions>? configure = null, Func<IKvStore, IKvStore>? wrap = null)
    {
        string directory = NewTempDirectory();
        var options = new StoreServerOptions { DataDirectory = directory, Token = Token, Urls = ["http://127.0.0.1:0"] };
        options = configure?.Invoke(options) ?? options;
        StoreServer server;
        if (wrap is null)
        {
            server = await StoreServer.StartAsync(options);
        }
        else
        {
            IKvStore store = wrap(DiskKvStore.Open(new DiskKvStoreOptions { Directory = directory, CapacityBytes = options.CapacityBytes }));
            server = await StoreServer.StartAsync(options, store, ownsStore: true);
        }

        return new ServerHarness(directory, server, options);
    }

    public static string NewTempDirectory() => Path.Combine(Path.GetTempPath(), "kvf-server-" + Guid.NewGuid().ToString("N"));

    public HttpKvStore Client(string? token = Token, TimeSpan? timeout = null, int maxRetries = 2, Version? version = null) =>
        new(new HttpKvStoreOptions
        {
            BaseAddress = Address,
            Token = token,
            RequestTimeout = timeout ?? TimeSpan.FromSeconds(10),
            MaxRetries = maxRetries,
            HttpVersion = version,
        });

    /// <summary>A plain HttpClient on the server, for what the store client never sends.</summary>
    public HttpClient Raw(string? token = Token)
    {
        var client = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = Address, Timeout = TimeSpan.FromSeconds(30) };
        if (token is not null)
        {
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return client;
    }

    /// <summary>Where the disk store keeps <paramref name="key"/>.</summary>
    public string ObjectPath(ObjectKey key) => Path.Combine(DataDirectory, "objects", key.Value[..2], key.Value);

    /// <summary>Every object file under the data directory.</summary>
    public string[] ObjectFiles()
    {
        string objects = Path.Combine(DataDirectory, "objects");
        return Directory.Exists(objects) ? Directory.GetFiles(objects, "*", SearchOption.AllDirectories) : [];
    }

    public async ValueTask DisposeAsync()
    {
        await Server.DisposeAsync();
        DeleteDirectory(DataDirectory);
    }

    public static void DeleteDirectory(string directory)
    {
        if (Directory.Exists(directory))
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}

/// <summary>Helpers for reading objects back.</summary>
internal static class StoreReads
{
    /// <summary>The whole object, or null on a miss.</summary>
    public static async Task<byte[]?> GetBytesAsync(this IKvStore store, ObjectKey key, ByteRange range = default, CancellationToken cancellationToken = default)
    {
        var buffer = new ArrayBufferWriter<byte>();
        StoreRead read = await store.GetAsync(key, buffer, range, cancellationToken);
        if (!read.Found)
        {
            Assert.Equal(0, buffer.WrittenCount);
            return null;
        }

        Assert.Equal(read.BytesWritten, buffer.WrittenCount);
        return buffer.WrittenSpan.ToArray();
    }
}

/// <summary>
/// A real store with one behaviour changed for a test: it waits on a gate before gets, or fails the next few calls
/// with <see cref="KvStoreException"/>, like a disk that stalls or hiccups. Everything else is the inner store's.
/// </summary>
internal sealed class FaultyStore(IKvStore inner) : IKvStore
{
    private int _failuresLeft;

    public string Description => "faulty:" + inner.Description;

    /// <summary>When set, gets wait for it (with the request's token) before reading.</summary>
    public TaskCompletionSource? GetGate { get; set; }

    /// <summary>Set when a get has reached the gate.</summary>
    public TaskCompletionSource GetEntered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private int _getCalls;

    public int GetCalls => Volatile.Read(ref _getCalls);

    /// <summary>The next <paramref name="count"/> gets throw <see cref="KvStoreException"/>.</summary>
    public void FailNextGets(int count) => Volatile.Write(ref _failuresLeft, count);

    public async ValueTask<StoreRead> GetAsync(ObjectKey key, IBufferWriter<byte> destination, ByteRange range = default, CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref _getCalls);
        if (Interlocked.Decrement(ref _failuresLeft) >= 0)
        {
            throw new KvStoreException("injected disk hiccup");
        }

        if (GetGate is { } gate)
        {
            GetEntered.TrySetResult();
            await gate.Task.WaitAsync(cancellationToken);
        }

        return await inner.GetAsync(key, destination, range, cancellationToken);
    }

    public ValueTask PutAsync(ObjectKey key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default) => inner.PutAsync(key, data, cancellationToken);

    public ValueTask<bool[]> ExistsAsync(IReadOnlyList<ObjectKey> keys, CancellationToken cancellationToken = default) => inner.ExistsAsync(keys, cancellationToken);

    public ValueTask<int> LongestPrefixAsync(IReadOnlyList<ObjectKey> chain, CancellationToken cancellationToken = default) => inner.LongestPrefixAsync(chain, cancellationToken);

    public ValueTask<bool> DeleteAsync(ObjectKey key, CancellationToken cancellationToken = default) => inner.DeleteAsync(key, cancellationToken);

    public ValueTask<StoreStats> GetStatsAsync(CancellationToken cancellationToken = default) => inner.GetStatsAsync(cancellationToken);

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}
