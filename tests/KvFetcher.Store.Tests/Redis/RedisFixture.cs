namespace KvFetcher.Store.Tests.Redis;

/// <summary>
/// One Redis deployment shared by a test class (tests keep apart by key prefix). Fails, never skips, when
/// <c>redis-server</c> is missing: CI installs it.
/// </summary>
public abstract class RedisFixture : IAsyncLifetime
{
    private RedisDeployment? _deployment;

    public abstract bool IsCluster { get; }

    internal RedisDeployment Deployment =>
        _deployment ?? throw new InvalidOperationException("The Redis fixture has not started.");

    /// <summary>A deployment of the same kind for a test to own (and kill).</summary>
    internal Task<RedisDeployment> StartAnotherAsync(CancellationToken cancellationToken) =>
        IsCluster ? RedisDeployment.StartClusterAsync(3, cancellationToken) : RedisDeployment.StartSingleAsync(cancellationToken: cancellationToken);

    public async ValueTask InitializeAsync() => _deployment = await StartAnotherAsync(TestContext.Current.CancellationToken);

    public async ValueTask DisposeAsync()
    {
        if (_deployment is not null)
        {
            await _deployment.DisposeAsync();
        }

        GC.SuppressFinalize(this);
    }
}

/// <summary>One <c>redis-server</c>.</summary>
public sealed class SingleRedisFixture : RedisFixture
{
    public override bool IsCluster => false;
}

/// <summary>A Redis Cluster of three primaries.</summary>
public sealed class ClusterRedisFixture : RedisFixture
{
    public override bool IsCluster => true;
}
