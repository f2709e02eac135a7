using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using KvFetcher.Core.Containers;
using StackExchange.Redis;

namespace KvFetcher.Store.Redis;

/// <summary>
/// An <see cref="IKvStore"/> in one Redis server or a Redis Cluster. An object lives in one hash slot (its keys carry
/// the hash tag <c>{objectkey}</c>): a manifest key <c>prefix{objectkey}:m</c> and, for objects larger than
/// <see cref="RedisKvStoreOptions.PartSize"/>, part keys <c>prefix{objectkey}:p:version:index</c>. A put writes the
/// parts of a fresh random version first, then (pipelined behind them, one round trip) a script that checks they are
/// all there, swaps the manifest in and drops the replaced version's parts, so a reader sees the old object or the new
/// one, never a mix or a partial one. A get reads the manifest, then every part at once (two round trips). Small
/// objects sit inline in the manifest key, replaced with one MULTI/EXEC and read with one GET. Capacity is Redis's own
/// <c>maxmemory</c>.
/// </summary>
public sealed partial class RedisKvStore : IKvStore
{
    /// <summary>Reads retried when the object was replaced between reading its manifest and its parts.</summary>
    private const int MaxReadAttempts = 4;

    /// <summary>How much longer parts live than their manifest under a TTL, so a live manifest never lacks its parts.</summary>
    private static readonly TimeSpan s_partTtlMargin = TimeSpan.FromSeconds(1);

    private readonly ConnectionMultiplexer[] _connections;
    private readonly IDatabase[] _databases;
    private readonly RedisKvStoreOptions _options;
    private long _hits;
    private long _misses;
    private long _bytesIn;
    private long _bytesOut;
    private long _corruptObjects;
    private int _disposed;
    private uint _nextConnection;

    private RedisKvStore(ConnectionMultiplexer[] connections, RedisKvStoreOptions options, string description)
    {
        _connections = connections;
        _databases = [.. connections.Select(c => c.GetDatabase())];
        _options = options;
        Description = description;
    }

    private enum ReadStatus
    {
        Found,
        Missing,
        Corrupt,
        Replaced,
    }

    public string Description { get; }

    /// <summary>Whether every connection reaches Redis now.</summary>
    public bool IsConnected => _connections.All(c => c.IsConnected);

    /// <summary>
    /// Connects to the Redis server or cluster named by <paramref name="options"/>. Returns within
    /// <see cref="RedisKvStoreOptions.ConnectTimeout"/> even when Redis is down: the store is then unavailable (every
    /// call fails at once with <see cref="KvStoreException"/>) and keeps reconnecting in the background, so it serves
    /// again once Redis is up. <see cref="IsConnected"/> tells which.
    /// </summary>
    public static async Task<RedisKvStore> ConnectAsync(RedisKvStoreOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        ConfigurationOptions configuration;
        try
        {
            configuration = ConfigurationOptions.Parse(options.ConnectionString);
        }
        catch (Exception ex) when (ex is ArgumentException or RedisException)
        {
            throw new ArgumentException($"Invalid Redis connection string '{options.ConnectionString}': {ex.Message}", nameof(options), ex);
        }

        if (configuration.EndPoints.Count == 0)
        {
            throw new ArgumentException($"The Redis connection string '{options.ConnectionString}' names no host:port.", nameof(options));
        }

        configuration.AbortOnConnectFail = false;
        configuration.ConnectRetry = 1;
        configuration.ReconnectRetryPolicy = new ExponentialRetry(250, 5000);
        configuration.ConnectTimeout = Milliseconds(options.ConnectTimeout);
        configuration.AsyncTimeout = Milliseconds(options.OperationTimeout);
        configuration.SyncTimeout = Milliseconds(options.OperationTimeout);
        configuration.BacklogPolicy = BacklogPolicy.FailFast;
        configuration.ClientName ??= "kvfetcher";
        configuration.AllowAdmin = true; // INFO and DBSIZE for GetStatsAsync; nothing here flushes or reconfigures
        string description = "redis:" + string.Join(',', configuration.EndPoints.Select(FormatEndPoint));

        cancellationToken.ThrowIfCancellationRequested();
        Task<ConnectionMultiplexer>[] connecting = new Task<ConnectionMultiplexer>[options.Connections];
        for (int i = 0; i < connecting.Length; i++)
        {
            connecting[i] = ConnectionMultiplexer.ConnectAsync(configuration.Clone());
        }

        try
        {
            await Task.WhenAll(connecting).WaitAsync(cancellationToken).ConfigureAwait(false);
            return new RedisKvStore([.. connecting.Select(c => c.Result)], options, description);
        }
        catch (Exception ex) when (ex is OperationCanceledException || IsRedisFailure(ex))
        {
            foreach (Task<ConnectionMultiplexer> connection in connecting)
            {
                _ = connection.ContinueWith(
                    static t => t.Result.Dispose(),
                    CancellationToken.None,
                    TaskContinuationOptions.OnlyOnRanToCompletion | TaskContinuationOptions.ExecuteSynchronously,
                    TaskScheduler.Default);
            }

            if (ex is OperationCanceledException)
            {
                throw;
            }

            throw new KvStoreException($"Cannot connect to {description}: {Reason(ex)}", ex);
        }
    }

    public async ValueTask PutAsync(ObjectKey key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        ThrowIfInvalid(key);
        if (!ChunkContainer.IsIntact(data.Span))
        {
            throw new ArgumentException($"Refusing to store '{key}': its {data.Length} bytes are not an intact chunk container.", nameof(data));
        }

        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        cancellationToken.ThrowIfCancellationRequested();
        ulong checksum = BinaryPrimitives.ReadUInt64LittleEndian(data.Span[^ChunkContainer.ChecksumSize..]);
        int partSize = _options.PartSize;
        string partPrefix = PartPrefix(key);
        IDatabase database = NextDatabase();
        try
        {
            if (data.Length <= partSize)
            {
                var manifest = new RedisManifest(data.Length, partSize, 0, NewVersion(), checksum);
                byte[] value = new byte[RedisManifest.Size + data.Length];
                manifest.Write(value);
                data.Span.CopyTo(value.AsSpan(RedisManifest.Size));
                // MULTI/EXEC rather than the commit script: Redis copies a script's arguments, which for a large inline
                // value measured 4x slower than a plain SET. The replaced manifest's parts (if it had any) go after.
                RedisKey manifestKey = ManifestKey(key);
                ITransaction transaction = database.CreateTransaction();
                Task<RedisValue> replaced = transaction.StringGetRangeAsync(manifestKey, 0, RedisManifest.Size - 1);
                Task<bool> set = transaction.StringSetAsync(manifestKey, value, _options.TimeToLive, When.Always);
                await transaction.ExecuteAsync().WaitAsync(cancellationToken).ConfigureAwait(false);
                await Task.WhenAll(replaced, set).WaitAsync(cancellationToken).ConfigureAwait(false);
                byte[]? head = replaced.Result;
                if (head is not null && RedisManifest.TryRead(head, out RedisManifest old) && !old.IsInline)
                {
                    RedisValue[] arguments = [partPrefix, head];
                    await database.ScriptEvaluateAsync(DropPartsScript, [manifestKey], arguments).WaitAsync(cancellationToken).ConfigureAwait(false);
                }
            }
            else
            {
                // As few parts as PartSize allows, of equal size: 1 MiB + 136 bytes is two halves, not 1 MiB and 136 bytes.
                int partCount = (int)((data.Length + (long)partSize - 1) / partSize);
                partSize = (int)((data.Length + (long)partCount - 1) / partCount);
                var manifest = new RedisManifest(data.Length, partSize, partCount, NewVersion(), checksum);
                string versionPrefix = partPrefix + manifest.VersionHex() + ":";
                var keys = new RedisKey[partCount + 1];
                keys[0] = ManifestKey(key);
                var writes = new Task[partCount + 1];
                for (int i = 0; i < partCount; i++)
                {
                    keys[i + 1] = versionPrefix + i.ToString(CultureInfo.InvariantCulture);
                    ReadOnlyMemory<byte> part = data.Slice(i * partSize, manifest.PartLength(i));
                    writes[i] = database.StringSetAsync(keys[i + 1], part, _options.PendingPartLifetime, When.Always);
                }

                // One round trip: every key is in the object's slot, so the parts and the commit share one connection and
                // Redis runs them in order. The commit checks that every part is there, so a failed part write fails it.
                byte[] head = new byte[RedisManifest.Size];
                manifest.Write(head);
                writes[partCount] = StartCommit(database, keys, head, partPrefix);
                await Task.WhenAll(writes).WaitAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (IsRedisFailure(ex))
        {
            throw Failure("put", key, ex);
        }

        Interlocked.Add(ref _bytesIn, data.Length);
    }

    public async ValueTask<StoreRead> GetAsync(ObjectKey key, IBufferWriter<byte> destination, ByteRange range = default, CancellationToken cancellationToken = default)
    {
        ThrowIfInvalid(key);
        ArgumentNullException.ThrowIfNull(destination);
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        cancellationToken.ThrowIfCancellationRequested();
        IDatabase database = NextDatabase();
        try
        {
            for (int attempt = 0; attempt < MaxReadAttempts; attempt++)
            {
                (ReadStatus status, StoreRead read, byte[]? head) = await ReadOnceAsync(database, key, destination, range, cancellationToken).ConfigureAwait(false);
                switch (status)
                {
                    case ReadStatus.Found:
                        Interlocked.Increment(ref _hits);
                        Interlocked.Add(ref _bytesOut, read.BytesWritten);
                        return read;
                    case ReadStatus.Corrupt:
                        await RemoveAsync(database, key, head, cancellationToken).ConfigureAwait(false);
                        Interlocked.Increment(ref _corruptObjects);
                        Interlocked.Increment(ref _misses);
                        return StoreRead.Miss;
                    case ReadStatus.Missing:
                        Interlocked.Increment(ref _misses);
                        return StoreRead.Miss;
                    case ReadStatus.Replaced:
                    default:
                        continue;
                }
            }
        }
        catch (Exception ex) when (IsRedisFailure(ex))
        {
            throw Failure("get", key, ex);
        }

        // Replaced on every attempt: the object is being rewritten faster than it can be read.
        Interlocked.Increment(ref _misses);
        return StoreRead.Miss;
    }

    public async ValueTask<bool[]> ExistsAsync(IReadOnlyList<ObjectKey> keys, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(keys);
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        cancellationToken.ThrowIfCancellationRequested();
        Task<bool>[] checks = StartExists(keys);
        try
        {
            await Task.WhenAll(checks).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsRedisFailure(ex))
        {
            throw new KvStoreException($"Redis exists of {keys.Count} keys at {Description} failed: {Reason(ex)}", ex);
        }

        bool[] found = new bool[checks.Length];
        for (int i = 0; i < checks.Length; i++)
        {
            found[i] = checks[i].Result;
        }

        return found;
    }

    public async ValueTask<int> LongestPrefixAsync(IReadOnlyList<ObjectKey> chain, CancellationToken cancellationToken = default)
    {
        bool[] found = await ExistsAsync(chain, cancellationToken).ConfigureAwait(false);
        int prefix = Array.IndexOf(found, false);
        return prefix < 0 ? found.Length : prefix;
    }

    public async ValueTask<bool> DeleteAsync(ObjectKey key, CancellationToken cancellationToken = default)
    {
        ThrowIfInvalid(key);
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        cancellationToken.ThrowIfCancellationRequested();
        try
        {
            return await RemoveAsync(NextDatabase(), key, expectedHead: null, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsRedisFailure(ex))
        {
            throw Failure("delete", key, ex);
        }
    }

    /// <summary>
    /// Counters are this client's. Usage comes from <c>INFO</c> of every primary: <see cref="StoreStats.UsedBytes"/>
    /// is Redis's <c>used_memory</c>, <see cref="StoreStats.CapacityBytes"/> its <c>maxmemory</c> (null when any primary
    /// has none), <see cref="StoreStats.Evictions"/> its <c>evicted_keys</c> and <see cref="StoreStats.Objects"/> the
    /// number of keys (<c>DBSIZE</c>): Redis keeps no count of objects, and a large object is several keys.
    /// </summary>
    public async ValueTask<StoreStats> GetStatsAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        cancellationToken.ThrowIfCancellationRequested();
        IServer[] primaries = [.. _connections[0].GetServers().Where(s => !s.IsReplica)];
        var memory = new Task<IGrouping<string, KeyValuePair<string, string>>[]>[primaries.Length];
        var stats = new Task<IGrouping<string, KeyValuePair<string, string>>[]>[primaries.Length];
        var sizes = new Task<long>[primaries.Length];
        for (int i = 0; i < primaries.Length; i++)
        {
            memory[i] = primaries[i].InfoAsync("memory");
            stats[i] = primaries[i].InfoAsync("stats");
            sizes[i] = primaries[i].DatabaseSizeAsync(_databases[0].Database);
        }

        try
        {
            await Task.WhenAll(Task.WhenAll(memory), Task.WhenAll(stats), Task.WhenAll(sizes)).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsRedisFailure(ex))
        {
            throw new KvStoreException($"Redis INFO at {Description} failed: {Reason(ex)}", ex);
        }

        long used = 0;
        long capacity = 0;
        bool bounded = primaries.Length > 0;
        long evicted = 0;
        long keys = 0;
        for (int i = 0; i < primaries.Length; i++)
        {
            used += InfoValue(memory[i].Result, "used_memory");
            long max = InfoValue(memory[i].Result, "maxmemory");
            bounded &= max > 0;
            capacity += max;
            evicted += InfoValue(stats[i].Result, "evicted_keys");
            keys += sizes[i].Result;
        }

        return new StoreStats
        {
            Objects = keys,
            UsedBytes = used,
            CapacityBytes = bounded ? capacity : null,
            Hits = Interlocked.Read(ref _hits),
            Misses = Interlocked.Read(ref _misses),
            BytesIn = Interlocked.Read(ref _bytesIn),
            BytesOut = Interlocked.Read(ref _bytesOut),
            Evictions = evicted,
            CorruptObjects = Interlocked.Read(ref _corruptObjects),
        };
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            foreach (ConnectionMultiplexer connection in _connections)
            {
                await connection.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    public override string ToString() => Description;

    /// <summary>The Redis key of an object's manifest (tests reach it to damage objects on purpose).</summary>
    internal string ManifestKey(ObjectKey key) => $"{_options.KeyPrefix}{{{key.Value}}}:m";

    /// <summary>What every part key of an object starts with; the version's hex, ':' and the index follow.</summary>
    internal string PartPrefix(ObjectKey key) => $"{_options.KeyPrefix}{{{key.Value}}}:p:";

    /// <summary>The connection for the next operation (all of one operation's commands go over one connection).</summary>
    private IDatabase NextDatabase() => _databases[Interlocked.Increment(ref _nextConnection) % (uint)_databases.Length];

    private static void ThrowIfInvalid(ObjectKey key)
    {
        if (key.Value is null)
        {
            throw new ArgumentException("The object key is the default (empty) value.", nameof(key));
        }
    }

    private static bool IsRedisFailure(Exception ex) =>
        ex is RedisException or TimeoutException or IOException or SocketException;

    private KvStoreException Failure(string operation, ObjectKey key, Exception ex) =>
        new($"Redis {operation} of '{key}' at {Description} failed: {Reason(ex)}", ex);

    /// <summary>
    /// Why a Redis call failed, in our words: the client's messages go on to advise changing the caller's code or
    /// connection string (abortConnect) and append pages of diagnostics, which say nothing useful to our users.
    /// </summary>
    internal static string Reason(Exception ex) => ex switch
    {
        RedisConnectionException connection => connection.FailureType switch
        {
            ConnectionFailureType.AuthenticationFailure => "Redis refused the credentials (check the password in the connection string)",
            ConnectionFailureType.UnableToConnect or ConnectionFailureType.UnableToResolvePhysicalConnection or ConnectionFailureType.SocketFailure
                or ConnectionFailureType.SocketClosed or ConnectionFailureType.ConnectionDisposed => "Redis is not reachable (is redis-server running and listening there?)",
            _ => $"the connection to Redis failed ({connection.FailureType})",
        },
        RedisTimeoutException or TimeoutException => "Redis did not answer in time",
        SocketException socket => $"the connection to Redis failed ({socket.SocketErrorCode})",
        _ => FirstSentence(ex.Message),
    };

    private static string FirstSentence(string message)
    {
        message = message.ReplaceLineEndings(" ");
        int end = message.IndexOf(". ", StringComparison.Ordinal);
        return end > 0 ? message[..end] : message.TrimEnd('.');
    }

    private static int Milliseconds(TimeSpan value) => (int)Math.Min(int.MaxValue, Math.Ceiling(value.TotalMilliseconds));

    private static string FormatEndPoint(EndPoint endPoint) => endPoint switch
    {
        DnsEndPoint dns => $"{dns.Host}:{dns.Port}",
        _ => endPoint.ToString() ?? "?",
    };

    private static ulong NewVersion()
    {
        Span<byte> random = stackalloc byte[sizeof(ulong)];
        RandomNumberGenerator.Fill(random);
        return BinaryPrimitives.ReadUInt64LittleEndian(random);
    }

    private static long InfoValue(IGrouping<string, KeyValuePair<string, string>>[] info, string name)
    {
        foreach (IGrouping<string, KeyValuePair<string, string>> section in info)
        {
            foreach (KeyValuePair<string, string> pair in section)
            {
                if (pair.Key == name && long.TryParse(pair.Value, NumberStyles.Integer, CultureInfo.InvariantCulture, out long value))
                {
                    return value;
                }
            }
        }

        return 0;
    }

    /// <summary>Whether <paramref name="value"/> is an intact container that is the object the manifest names.</summary>
    private static bool IsObject(ReadOnlySpan<byte> value, in RedisManifest manifest) =>
        value.Length == manifest.Length
        && value.Length >= ChunkContainer.ChecksumSize
        && BinaryPrimitives.ReadUInt64LittleEndian(value[^ChunkContainer.ChecksumSize..]) == manifest.Checksum
        && ChunkContainer.IsIntact(value);

    private static void ThrowIfOutside(ObjectKey key, ByteRange range, long length)
    {
        if (!range.TryResolve(length, out _, out _))
        {
            throw new ArgumentOutOfRangeException(nameof(range), range, $"The range lies outside '{key}', which is {length} bytes long.");
        }
    }

    /// <summary>Hands leases back to their pool, including those of reads still in flight after a cancellation.</summary>
    private static void Release(Task<Lease<byte>?> read)
    {
        if (read.IsCompletedSuccessfully)
        {
            read.Result?.Dispose();
        }
        else if (!read.IsCompleted)
        {
            _ = read.ContinueWith(
                static t => t.Result?.Dispose(),
                CancellationToken.None,
                TaskContinuationOptions.OnlyOnRanToCompletion | TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default);
        }
    }

    private Task<bool>[] StartExists(IReadOnlyList<ObjectKey> keys)
    {
        IDatabase database = NextDatabase();
        var checks = new Task<bool>[keys.Count];
        for (int i = 0; i < checks.Length; i++)
        {
            ThrowIfInvalid(keys[i]);
            checks[i] = database.KeyExistsAsync(ManifestKey(keys[i]));
        }

        return checks;
    }

    /// <summary>Sends the commit script (it runs after every command sent before it on the object's connection).</summary>
    private Task<RedisResult> StartCommit(IDatabase database, RedisKey[] keys, byte[] manifest, string partPrefix)
    {
        long manifestTtl = _options.TimeToLive is { } ttl ? (long)Math.Ceiling(ttl.TotalMilliseconds) : 0;
        long partTtl = manifestTtl > 0 ? manifestTtl + (long)s_partTtlMargin.TotalMilliseconds : 0;
        RedisValue[] arguments = [manifest, manifestTtl, partTtl, partPrefix];
        return database.ScriptEvaluateAsync(CommitScript, keys, arguments);
    }

    /// <summary>Removes an object (only while its manifest still starts with <paramref name="expectedHead"/>, when given).</summary>
    private async Task<bool> RemoveAsync(IDatabase database, ObjectKey key, byte[]? expectedHead, CancellationToken cancellationToken)
    {
        RedisValue[] arguments = [PartPrefix(key), expectedHead is null ? "0" : "1", expectedHead ?? []];
        RedisResult result = await database.ScriptEvaluateAsync(RemoveScript, [ManifestKey(key)], arguments)
            .WaitAsync(cancellationToken).ConfigureAwait(false);
        return (long)result == 1;
    }

    /// <summary>
    /// One read: the manifest, then (for a large object) every part at once. Writes to <paramref name="destination"/>
    /// only when it returns <see cref="ReadStatus.Found"/>; for <see cref="ReadStatus.Corrupt"/> it returns the
    /// manifest head it saw, so only that object is removed.
    /// </summary>
    private async Task<(ReadStatus Status, StoreRead Read, byte[]? Head)> ReadOnceAsync(
        IDatabase database, ObjectKey key, IBufferWriter<byte> destination, ByteRange range, CancellationToken cancellationToken)
    {
        string manifestKey = ManifestKey(key);
        Task<Lease<byte>?> manifestRead = database.StringGetLeaseAsync(manifestKey);
        RedisManifest manifest;
        byte[] head;
        try
        {
            Lease<byte>? value = await manifestRead.WaitAsync(cancellationToken).ConfigureAwait(false);
            if (value is null)
            {
                return (ReadStatus.Missing, StoreRead.Miss, null);
            }

            head = value.Span[..Math.Min(RedisManifest.Size, value.Length)].ToArray();
            if (!RedisManifest.TryRead(value.Span, out manifest))
            {
                return (ReadStatus.Corrupt, StoreRead.Miss, head);
            }

            ThrowIfOutside(key, range, manifest.Length);
            if (manifest.IsInline)
            {
                return ReadInline(value.Span[RedisManifest.Size..], manifest, destination, range, head);
            }
        }
        finally
        {
            Release(manifestRead);
        }

        string versionPrefix = PartPrefix(key) + manifest.VersionHex() + ":";
        var parts = new Task<Lease<byte>?>[manifest.PartCount];
        for (int i = 0; i < parts.Length; i++)
        {
            parts[i] = database.StringGetLeaseAsync(versionPrefix + i.ToString(CultureInfo.InvariantCulture));
        }

        try
        {
            await Task.WhenAll(parts).WaitAsync(cancellationToken).ConfigureAwait(false);
            for (int i = 0; i < parts.Length; i++)
            {
                if (parts[i].Result is not { } part || part.Length != manifest.PartLength(i))
                {
                    // A missing part: either the object was replaced or deleted since its manifest was read (retry),
                    // or it lost a part while its manifest stayed (an incomplete object: remove it).
                    RedisValue now = await database.StringGetRangeAsync(manifestKey, 0, RedisManifest.Size - 1)
                        .WaitAsync(cancellationToken).ConfigureAwait(false);
                    return ((byte[]?)now) is { } current && current.AsSpan().SequenceEqual(head)
                        ? (ReadStatus.Corrupt, StoreRead.Miss, head)
                        : (ReadStatus.Replaced, StoreRead.Miss, null);
                }
            }

            return Assemble(parts, manifest, destination, range, head);
        }
        finally
        {
            foreach (Task<Lease<byte>?> part in parts)
            {
                Release(part);
            }
        }
    }

    private static (ReadStatus, StoreRead, byte[]?) ReadInline(
        ReadOnlySpan<byte> value, in RedisManifest manifest, IBufferWriter<byte> destination, ByteRange range, byte[] head)
    {
        if (!IsObject(value, manifest))
        {
            return (ReadStatus.Corrupt, StoreRead.Miss, head);
        }

        range.TryResolve(manifest.Length, out long start, out long count);
        destination.Write(value.Slice((int)start, (int)count));
        return (ReadStatus.Found, new StoreRead(true, manifest.Length, count), null);
    }

    /// <summary>Copies the parts into place (the destination itself for a whole-object read), verifies, then commits.</summary>
    private static (ReadStatus, StoreRead, byte[]?) Assemble(
        Task<Lease<byte>?>[] parts, in RedisManifest manifest, IBufferWriter<byte> destination, ByteRange range, byte[] head)
    {
        int length = (int)manifest.Length;
        range.TryResolve(length, out long start, out long count);
        byte[]? rented = range.IsAll ? null : ArrayPool<byte>.Shared.Rent(length);
        try
        {
            Span<byte> target = rented is null ? destination.GetSpan(length)[..length] : rented.AsSpan(0, length);
            int offset = 0;
            foreach (Task<Lease<byte>?> part in parts)
            {
                ReadOnlySpan<byte> bytes = part.Result!.Span;
                bytes.CopyTo(target[offset..]);
                offset += bytes.Length;
            }

            if (!IsObject(target, manifest))
            {
                return (ReadStatus.Corrupt, StoreRead.Miss, head);
            }

            if (rented is null)
            {
                destination.Advance(length);
            }
            else
            {
                destination.Write(target.Slice((int)start, (int)count));
            }

            return (ReadStatus.Found, new StoreRead(true, length, count), null);
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }
}
