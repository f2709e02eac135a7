using System.Buffers;
using KvFetcher.Store.Disk;

namespace KvFetcher.Store.Tests.Disk;

/// <summary>A fresh directory per test, removed afterwards, and helpers to open stores on it and look at its files.</summary>
internal sealed class TempStoreDirectory : IDisposable
{
    public TempStoreDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "kvf-disk-" + Guid.NewGuid().ToString("N"));
    }

    public string Path { get; }

    public string TempFolder => System.IO.Path.Combine(Path, "tmp");

    public DiskKvStore Open(long? capacity = null, bool fsync = true) =>
        DiskKvStore.Open(new DiskKvStoreOptions { Directory = Path, CapacityBytes = capacity, Fsync = fsync });

    /// <summary>Where the store keeps <paramref name="key"/> (objects/ + first two characters + key).</summary>
    public string ObjectPath(ObjectKey key) => System.IO.Path.Combine(Path, "objects", key.Value[..2], key.Value);

    /// <summary>Every object file and its size.</summary>
    public FileInfo[] ObjectFiles() =>
        new DirectoryInfo(System.IO.Path.Combine(Path, "objects")).GetFiles("*", SearchOption.AllDirectories);

    public string[] TempFiles() =>
        Directory.Exists(TempFolder) ? Directory.GetFileSystemEntries(TempFolder) : [];

    public void Dispose()
    {
        if (Directory.Exists(Path))
        {
            Directory.Delete(Path, recursive: true);
        }
    }
}

/// <summary>
/// A destination that blocks inside GetMemory/GetSpan until released, holding a get open (and its object pinned).
/// </summary>
internal sealed class BlockingWriter : IBufferWriter<byte>, IDisposable
{
    private readonly ArrayBufferWriter<byte> _inner = new();
    private readonly ManualResetEventSlim _entered = new();
    private readonly ManualResetEventSlim _release = new();

    public ReadOnlySpan<byte> WrittenSpan => _inner.WrittenSpan;

    /// <summary>Waits until a get is inside the writer.</summary>
    public void WaitEntered() => Assert.True(_entered.Wait(TimeSpan.FromSeconds(10)), "the get never reached the destination");

    public void Release() => _release.Set();

    public void Advance(int count) => _inner.Advance(count);

    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        Block();
        return _inner.GetMemory(sizeHint);
    }

    public Span<byte> GetSpan(int sizeHint = 0)
    {
        Block();
        return _inner.GetSpan(sizeHint);
    }

    public void Dispose()
    {
        _entered.Dispose();
        _release.Dispose();
    }

    private void Block()
    {
        _entered.Set();
        Assert.True(_release.Wait(TimeSpan.FromSeconds(10)), "the test never released the get");
    }
}
