using KvFetcher.Store;
using KvFetcher.Store.Remote;
using KvFetcher.Store.Tests.Contract;

namespace KvFetcher.Server.Tests;

/// <summary>
/// The <see cref="IKvStore"/> contract against <see cref="HttpKvStore"/> talking to a real <see cref="StoreServer"/>
/// (over a disk store in a temp directory) on an ephemeral loopback port.
/// </summary>
public sealed class HttpKvStoreContractTests : KvStoreContractTests
{
    protected override async ValueTask<IKvStore> OpenAsync()
    {
        ServerHarness harness = await ServerHarness.StartAsync();
        Own(harness);
        return harness.Client();
    }

    /// <summary>A server whose largest accepted body is the limit (413, which the client reads as full).</summary>
    protected override async ValueTask<IKvStore?> OpenLimitedAsync(long maxObjectBytes)
    {
        ServerHarness harness = await ServerHarness.StartAsync(o => o with { MaxObjectBytes = maxObjectBytes });
        Own(harness);
        return harness.Client();
    }
}
