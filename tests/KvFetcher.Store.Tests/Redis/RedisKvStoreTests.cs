using System.Buffers;
using System.Net;
using KvFetcher.Store.Redis;
using StackExchange.Redis;

namespace KvFetcher.Store.Tests.Redis;

/// <summary>Runs every Redis store test against one <c>redis-server</c>.</summary>
public sealed class SingleRedisKvStoreTests(SingleRedisFixture fixture) : RedisKvStoreTests(fixture), IClassFixture<SingleRedisFixture>;

/// <summary>Runs every Redis store test against a three-primary Redis Cluster.</summary>
public sealed class ClusterRedisKvStoreTests(ClusterRedisFixture fixture) : RedisKvStoreTests(fixture), IClassFixture<ClusterRedisFixture>;

/// <summary>
/// <see cref="RedisKvStore"/> against real Redis processes. Each test uses its own key prefix on the shared deployment
/// and a raw StackExchange.Redis connection to look at (and damage) the keys behind an object.
/// </summary>
public abstract class RedisKvStoreTests(RedisFixture fixture) : IAsyncLifetime
{
    private const int Small = 64 * 1024;
    private const int Large = 5 * 1024 * 1024;

    private readonly string _prefix = $"t{Guid.NewGuid():N}:";
    private readonly List<IAsyncDisposable> _owned = [];
    private ConnectionMultiplexer? _raw;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private IDatabase Raw => _raw!.GetDatabase();

    public async ValueTask InitializeAsync() => _raw = await ConnectionMultiplexer.ConnectAsync(fixture.Deployment.ConnectionString + ",allowAdmin=true");

    public async ValueTask DisposeAsync()
    {
        foreach (IAsyncDisposable owned in _owned)
        {
            await owned.DisposeAsync();
        }

        if (_raw is not null)
        {
            await _raw.DisposeAsync();
        }

        GC.SuppressFinalize(this);
    }

    [Theory]
    [InlineData(Small)]
    [InlineData(Large)]
    public async Task Put_Object_InlineOrSplitIntoPartsAndReadBackWhole(int payload)
    {
        RedisKvStore store = await OpenAsync();
        ObjectKey key = TestObjects.KeyFor($"round-trip-{payload}");
        byte[] data = TestObjects.Container(key, payload, seed: 7);

        await store.PutAsync(key, data, Ct);
        var output = new ArrayBufferWriter<byte>();
        StoreRead read = await store.GetAsync(key, output, cancellationToken: Ct);

        Assert.Equal(new StoreRead(true, data.Length, data.Length), read);
        Assert.True(output.WrittenSpan.SequenceEqual(data));
        RedisManifest manifest = await ManifestAsync(store, key);
        Assert.Equal(payload == Small ? 0 : 6, manifest.PartCount);
    }

    [Fact]
    public async Task ExistsAndLongestPrefix_ChainAcrossSlots_ReportStoredKeys()
    {
        RedisKvStore store = await OpenAsync();
        ObjectKey[] chain = [.. Enumerable.Range(0, 8).Select(i => TestObjects.KeyFor($"chain-{i}"))];
        foreach (int i in (int[])[0, 1, 2, 3, 4, 6])
        {
            await store.PutAsync(chain[i], TestObjects.Container(chain[i], 100, i), Ct);
        }

        await AssertExistsAsync(store, chain, true, true, true, true, true, false, true, false);
        Assert.Equal(5, await store.LongestPrefixAsync(chain, Ct));
        Assert.Equal(0, await store.LongestPrefixAsync(chain[5..], Ct));
        Assert.Equal(0, await store.LongestPrefixAsync([], Ct));
        Assert.Empty(await store.ExistsAsync([], Ct));
        if (fixture.IsCluster)
        {
            // The chain really is spread over the cluster's nodes, so one check per node is issued together.
            ClusterConfiguration nodes = (await _raw!.GetServers()[0].ClusterNodesAsync())!;
            int owners = chain.Select(k => nodes.GetBySlot(store.ManifestKey(k))!.EndPoint).Distinct().Count();
            Assert.True(owners > 1, $"the chain's keys all live on one node of {fixture.Deployment.ConnectionString}");
        }
    }

    [Fact]
    public async Task Delete_LargeObject_RemovesManifestAndParts()
    {
        RedisKvStore store = await OpenAsync();
        ObjectKey key = TestObjects.KeyFor("delete");
        await store.PutAsync(key, TestObjects.Container(key, Large, 1), Ct);
        RedisKey[] keys = await KeysOfAsync(store, key);

        Assert.True(await store.DeleteAsync(key, Ct));

        Assert.Equal(0, await Raw.KeyExistsAsync(keys));
        await AssertExistsAsync(store, [key], false);
        Assert.False(await store.DeleteAsync(key, Ct));
        Assert.Equal(StoreRead.Miss, await store.GetAsync(key, new ArrayBufferWriter<byte>(), cancellationToken: Ct));
    }

    [Fact]
    public async Task Put_Overwrite_NewObjectServedAndOldPartsRemoved()
    {
        RedisKvStore store = await OpenAsync();
        ObjectKey key = TestObjects.KeyFor("overwrite");
        await store.PutAsync(key, TestObjects.Container(key, Large, 1), Ct);
        RedisKey[] first = await KeysOfAsync(store, key);
        byte[] second = TestObjects.Container(key, (3 * 1024 * 1024) + 5, 2);
        await store.PutAsync(key, second, Ct);
        RedisKey[] secondKeys = await KeysOfAsync(store, key);
        byte[] third = TestObjects.Container(key, Small, 3);
        await store.PutAsync(key, third, Ct);

        Assert.Equal(0, await Raw.KeyExistsAsync(first[1..]));
        Assert.Equal(0, await Raw.KeyExistsAsync(secondKeys[1..]));
        var output = new ArrayBufferWriter<byte>();
        await store.GetAsync(key, output, cancellationToken: Ct);
        Assert.True(output.WrittenSpan.SequenceEqual(third));
    }

    [Fact]
    public async Task Get_WhileAnotherClientOverwrites_OldOrNewNeverMixed()
    {
        RedisKvStore writer = await OpenAsync();
        RedisKvStore reader = await OpenAsync();
        ObjectKey key = TestObjects.KeyFor("race");
        byte[][] versions = [TestObjects.Container(key, 3 * 1024 * 1024, 1), TestObjects.Container(key, 3 * 1024 * 1024, 2)];
        await writer.PutAsync(key, versions[0], Ct);

        Task writes = Task.Run(
            async () =>
            {
                for (int i = 1; i <= 24; i++)
                {
                    await writer.PutAsync(key, versions[i % 2], Ct);
                }
            },
            Ct);
        int found = 0;
        var output = new ArrayBufferWriter<byte>();
        do
        {
            output.ResetWrittenCount();
            StoreRead read = await reader.GetAsync(key, output, cancellationToken: Ct);
            if (read.Found)
            {
                found++;
                Assert.True(output.WrittenSpan.SequenceEqual(versions[0]) || output.WrittenSpan.SequenceEqual(versions[1]));
            }
            else
            {
                Assert.Equal(0, output.WrittenCount);
            }
        }
        while (!writes.IsCompleted);

        await writes;
        Assert.True(found > 0);
        Assert.Equal(0, (await reader.GetStatsAsync(Ct)).CorruptObjects);
        await AssertExistsAsync(reader, [key], true);
    }

    [Theory]
    [InlineData(Large, Damage.PartBytes)]
    [InlineData(Large, Damage.PartMissing)]
    [InlineData(Large, Damage.ManifestGarbage)]
    [InlineData(Large, Damage.ManifestField)]
    [InlineData(Small, Damage.InlineBytes)]
    [InlineData(Small, Damage.ManifestGarbage)]
    public async Task Get_DamagedObject_MissRemovedAndCounted(int payload, Damage damage)
    {
        RedisKvStore store = await OpenAsync();
        ObjectKey key = TestObjects.KeyFor("damaged");
        await store.PutAsync(key, TestObjects.Container(key, payload, 5), Ct);
        RedisKey[] keys = await KeysOfAsync(store, key);
        switch (damage)
        {
            case Damage.PartBytes:
                await Raw.StringSetRangeAsync(keys[2], 1234, new byte[] { 0xde, 0xad, 0xbe, 0xef });
                break;
            case Damage.PartMissing:
                await Raw.KeyDeleteAsync(keys[3]);
                break;
            case Damage.ManifestGarbage:
                await Raw.StringSetAsync(keys[0], "not a manifest at all");
                break;
            case Damage.ManifestField:
                await Raw.StringSetRangeAsync(keys[0], 8, new byte[] { 0x01 }); // the length, under the manifest's hash
                break;
            case Damage.InlineBytes:
                await Raw.StringSetRangeAsync(keys[0], RedisManifest.Size + 500, new byte[] { 0x55, 0xaa });
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(damage), damage, null);
        }

        var output = new ArrayBufferWriter<byte>();
        StoreRead read = await store.GetAsync(key, output, cancellationToken: Ct);

        Assert.Equal(StoreRead.Miss, read);
        Assert.Equal(0, output.WrittenCount);
        StoreStats stats = await store.GetStatsAsync(Ct);
        Assert.Equal(1, stats.CorruptObjects);
        Assert.Equal(1, stats.Misses);
        Assert.False(await Raw.KeyExistsAsync(keys[0]));
        if (damage != Damage.ManifestGarbage)
        {
            Assert.Equal(0, await Raw.KeyExistsAsync(keys));
        }
    }

    [Fact]
    public async Task Operations_RedisKilledThenRestarted_KvStoreExceptionThenServesAgain()
    {
        await using RedisDeployment own = await fixture.StartAnotherAsync(Ct);
        await using RedisKvStore store = await RedisKvStore.ConnectAsync(new RedisKvStoreOptions { ConnectionString = own.ConnectionString, KeyPrefix = _prefix }, Ct);
        ObjectKey key = TestObjects.KeyFor("down");
        byte[] data = TestObjects.Container(key, Large, 1);
        await store.PutAsync(key, data, Ct);

        own.Kill();

        // The bound only turns a hang into a failure: every call must fail on its own, as a KvStoreException.
        TimeSpan bound = TimeSpan.FromSeconds(30);
        await Assert.ThrowsAsync<KvStoreException>(() => store.GetAsync(key, new ArrayBufferWriter<byte>(), cancellationToken: Ct).AsTask().WaitAsync(bound, Ct));
        await Assert.ThrowsAsync<KvStoreException>(() => store.PutAsync(key, data, Ct).AsTask().WaitAsync(bound, Ct));
        await Assert.ThrowsAsync<KvStoreException>(() => store.ExistsAsync([key], Ct).AsTask().WaitAsync(bound, Ct));
        await Assert.ThrowsAsync<KvStoreException>(() => store.LongestPrefixAsync([key], Ct).AsTask().WaitAsync(bound, Ct));
        await Assert.ThrowsAsync<KvStoreException>(() => store.DeleteAsync(key, Ct).AsTask().WaitAsync(bound, Ct));
        await Assert.ThrowsAsync<KvStoreException>(() => store.GetStatsAsync(Ct).AsTask().WaitAsync(bound, Ct));

        // Back on the same ports (empty: persistence is off): the same store instance reconnects by itself.
        await own.RestartAsync(Ct);
        await WaitUntilAsync(async () =>
        {
            try
            {
                await store.PutAsync(key, data, Ct);
                return true;
            }
            catch (KvStoreException)
            {
                return false;
            }
        });
        var output = new ArrayBufferWriter<byte>();
        Assert.True((await store.GetAsync(key, output, cancellationToken: Ct)).Found);
        Assert.True(output.WrittenSpan.SequenceEqual(data));
    }

    [Fact]
    public async Task ConnectAsync_NothingListening_ReturnsAStoreWhoseCallsFailWithKvStoreException()
    {
        int port;
        using (var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0))
        {
            listener.Start();
            port = ((IPEndPoint)listener.LocalEndpoint).Port;
        }

        // Redis down at start is an unavailable store (it reconnects in the background), not a failure to open.
        var options = new RedisKvStoreOptions { ConnectionString = $"127.0.0.1:{port}", ConnectTimeout = TimeSpan.FromMilliseconds(500) };
        await using RedisKvStore store = await RedisKvStore.ConnectAsync(options, Ct).WaitAsync(TimeSpan.FromSeconds(30), Ct);
        Assert.False(store.IsConnected);
        KvStoreException ex = await Assert.ThrowsAsync<KvStoreException>(async () => await store.ExistsAsync([ObjectKey.Parse("absent.raw0")], Ct));
        // In our words, on one line: no advice from the client library about "your code" or abortConnect.
        Assert.Contains("not reachable", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("your code", ex.Message, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("abortConnect", ex.Message, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Theory]
    [InlineData(Small)]
    [InlineData(Large)]
    public async Task Put_WithTimeToLive_ObjectAndPartsExpire(int payload)
    {
        // Long enough that a 5 MB put on a loaded 2-core machine finishes well inside it (1.5 s once did not).
        RedisKvStore store = await OpenAsync(TimeSpan.FromSeconds(4));
        ObjectKey key = TestObjects.KeyFor("ttl");
        await store.PutAsync(key, TestObjects.Container(key, payload, 1), Ct);
        RedisKey[] keys = await KeysOfAsync(store, key);
        Assert.True((await Raw.KeyTimeToLiveAsync(keys[0])) is { } left && left > TimeSpan.Zero);
        await AssertExistsAsync(store, [key], true);

        await WaitUntilAsync(async () => await Raw.KeyExistsAsync(keys) == 0);

        Assert.Equal(StoreRead.Miss, await store.GetAsync(key, new ArrayBufferWriter<byte>(), cancellationToken: Ct));
        await AssertExistsAsync(store, [key], false);
    }

    [Fact]
    public async Task Put_WithoutTimeToLive_KeysPersist()
    {
        RedisKvStore store = await OpenAsync();
        ObjectKey key = TestObjects.KeyFor("persist");
        await store.PutAsync(key, TestObjects.Container(key, Large, 1), Ct);

        foreach (RedisKey redisKey in await KeysOfAsync(store, key))
        {
            Assert.Null(await Raw.KeyTimeToLiveAsync(redisKey));
        }
    }

    [Fact]
    public async Task GetStats_AfterTraffic_CountsAndRedisUsage()
    {
        RedisKvStore store = await OpenAsync();
        ObjectKey key = TestObjects.KeyFor("stats");
        byte[] data = TestObjects.Container(key, Large, 1);
        await store.PutAsync(key, data, Ct);
        await store.GetAsync(key, new ArrayBufferWriter<byte>(), new ByteRange(0, 10), Ct);
        await store.GetAsync(TestObjects.KeyFor("none"), new ArrayBufferWriter<byte>(), cancellationToken: Ct);

        StoreStats stats = await store.GetStatsAsync(Ct);

        Assert.Equal(1, stats.Hits);
        Assert.Equal(1, stats.Misses);
        Assert.Equal(data.Length, stats.BytesIn);
        Assert.Equal(10, stats.BytesOut);
        Assert.True(stats.Objects >= 7);
        Assert.True(stats.UsedBytes > data.Length);
        Assert.Null(stats.CapacityBytes);
    }

    [Fact]
    public async Task ConnectAsync_BadOptions_ArgumentException()
    {
        string connection = fixture.Deployment.ConnectionString;
        await Assert.ThrowsAsync<ArgumentException>(() => RedisKvStore.ConnectAsync(new RedisKvStoreOptions { ConnectionString = connection, KeyPrefix = "a{b}" }, Ct));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => RedisKvStore.ConnectAsync(new RedisKvStoreOptions { ConnectionString = connection, PartSize = 1000 }, Ct));
        await Assert.ThrowsAsync<ArgumentException>(() => RedisKvStore.ConnectAsync(new RedisKvStoreOptions { ConnectionString = " " }, Ct));
    }

    public enum Damage
    {
        PartBytes,
        PartMissing,
        ManifestGarbage,
        ManifestField,
        InlineBytes,
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition)
    {
        for (int i = 0; i < 300; i++)
        {
            if (await condition())
            {
                return;
            }

            await Task.Delay(50, Ct);
        }

        Assert.Fail("The condition did not hold within 15 s.");
    }

    private static async Task AssertExistsAsync(RedisKvStore store, ObjectKey[] keys, params bool[] expected)
    {
        bool[] actual = await store.ExistsAsync(keys, Ct);
        Assert.Equal(expected, actual);
    }

    private async Task<RedisKvStore> OpenAsync(TimeSpan? timeToLive = null)
    {
        RedisKvStore store = await RedisKvStore.ConnectAsync(
            new RedisKvStoreOptions { ConnectionString = fixture.Deployment.ConnectionString, KeyPrefix = _prefix, TimeToLive = timeToLive }, Ct);
        _owned.Add(store);
        return store;
    }

    private async Task<RedisManifest> ManifestAsync(RedisKvStore store, ObjectKey key)
    {
        byte[]? value = await Raw.StringGetAsync(store.ManifestKey(key));
        Assert.NotNull(value);
        Assert.True(RedisManifest.TryRead(value, out RedisManifest manifest));
        return manifest;
    }

    /// <summary>The manifest key, then the part keys, of the object stored now.</summary>
    private async Task<RedisKey[]> KeysOfAsync(RedisKvStore store, ObjectKey key)
    {
        RedisManifest manifest = await ManifestAsync(store, key);
        string versionPrefix = store.PartPrefix(key) + manifest.VersionHex() + ":";
        return [store.ManifestKey(key), .. Enumerable.Range(0, manifest.PartCount).Select(i => (RedisKey)$"{versionPrefix}{i}")];
    }
}
