using KvFetcher.Store.Tests.Contract;

namespace KvFetcher.Store.Tests.Disk;

/// <summary>The <see cref="IKvStore"/> contract against a <see cref="Store.Disk.DiskKvStore"/> in a fresh temp directory.</summary>
public sealed class DiskKvStoreContractTests : KvStoreContractTests
{
    protected override ValueTask<IKvStore> OpenAsync() => ValueTask.FromResult(OpenInTempDirectory(capacity: null));

    /// <summary>A store whose capacity is the limit: a larger object can never fit.</summary>
    protected override ValueTask<IKvStore?> OpenLimitedAsync(long maxObjectBytes) => ValueTask.FromResult<IKvStore?>(OpenInTempDirectory(maxObjectBytes));

    private IKvStore OpenInTempDirectory(long? capacity)
    {
        var directory = new TempStoreDirectory();
        Own(directory);
        return directory.Open(capacity);
    }
}
