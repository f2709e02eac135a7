using KvFetcher.Store.Redis;
using KvFetcher.Store.Tests.Contract;

namespace KvFetcher.Store.Tests.Redis;

/// <summary>The <see cref="IKvStore"/> contract against one <c>redis-server</c>.</summary>
public sealed class SingleRedisKvStoreContractTests(SingleRedisFixture fixture) : RedisKvStoreContractTests(fixture), IClassFixture<SingleRedisFixture>;

/// <summary>The <see cref="IKvStore"/> contract against a three-primary Redis Cluster.</summary>
public sealed class ClusterRedisKvStoreContractTests(ClusterRedisFixture fixture) : RedisKvStoreContractTests(fixture), IClassFixture<ClusterRedisFixture>;

/// <summary>The <see cref="IKvStore"/> contract against a <see cref="RedisKvStore"/> with a key prefix of its own per test.</summary>
public abstract class RedisKvStoreContractTests(RedisFixture fixture) : KvStoreContractTests
{
    protected override async ValueTask<IKvStore> OpenAsync() =>
        await RedisKvStore.ConnectAsync(new RedisKvStoreOptions { ConnectionString = fixture.Deployment.ConnectionString, KeyPrefix = $"c{Guid.NewGuid():N}:" }, Ct);

    /// <summary>Redis keeps whatever fits its memory: the store sets no object size limit of its own.</summary>
    protected override ValueTask<IKvStore?> OpenLimitedAsync(long maxObjectBytes) => ValueTask.FromResult<IKvStore?>(null);
}
