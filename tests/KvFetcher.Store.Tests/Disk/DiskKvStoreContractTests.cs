using KvFetcher.Store.Disk;
using KvFetcher.Store.Tests.Contract;

namespace KvFetcher.Store.Tests.Disk;

/// <summary>The <see cref="IKvStore"/> contract against a <see cref="DiskKvStore"/> in a fresh temp directory.</summary>
public sealed class DiskKvStoreContractTests : KvStoreContractTests
{
    protected override ValueTask<IKvStore> OpenAsync() => ValueTask.FromResult<IKvStore>(OpenInTempDirectory(capacity: null));

    /// <summary>A store whose capacity is the limit: a larger object can never fit.</summary>
    protected override ValueTask<IKvStore?> OpenLimitedAsync(long maxObjectBytes) => ValueTask.FromResult<IKvStore?>(OpenInTempDirectory(maxObjectBytes));

    private DiskKvStore OpenInTempDirectory(long? capacity)
    {
        var directory = new TempStoreDirectory();
        Own(directory);
        return directory.Open(capacity);
    }
}
