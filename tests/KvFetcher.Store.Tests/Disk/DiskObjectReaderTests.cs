using KvFetcher.Core;
using KvFetcher.Store.Disk;

namespace KvFetcher.Store.Tests.Disk;

/// <summary>
/// <see cref="DiskKvStore.OpenRead"/>, the store server's streamed GET: the length before any byte, the header with the
/// first read, the checksum at <see cref="DiskKvStore.ObjectReader.Finish"/>; a corrupt object is discarded.
/// </summary>
public sealed class DiskObjectReaderTests : IDisposable
{
    private readonly TempStoreDirectory _dir = new();

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public void Dispose() => _dir.Dispose();

    private async Task PutThenCorruptAsync(DiskKvStore store, ObjectKey key, int size, int at)
    {
        await store.PutAsync(key, TestObjects.Container(key, size, 1), Ct);
        byte[] onDisk = await File.ReadAllBytesAsync(_dir.ObjectPath(key), Ct);
        onDisk[at] ^= 0x20;
        await File.WriteAllBytesAsync(_dir.ObjectPath(key), onDisk, Ct);
    }

    private static byte[] ReadAll(DiskKvStore.ObjectReader reader, int slice)
    {
        byte[] all = new byte[reader.Length];
        int at = 0;
        while (!reader.AtEnd)
        {
            at += reader.Read(all.AsSpan(at, (int)Math.Min(slice, all.Length - at)));
        }

        return all;
    }

    [Fact]
    public async Task OpenRead_IntactObjectInSlices_SameBytesAndCountedAsAHit()
    {
        await using DiskKvStore store = _dir.Open();
        ObjectKey key = TestObjects.KeyFor("streamed");
        byte[] data = TestObjects.Container(key, (5 << 20) + 7, 1);
        await store.PutAsync(key, data, Ct);

        using (DiskKvStore.ObjectReader reader = store.OpenRead(key)!)
        {
            Assert.Equal(data.Length, reader.Length);
            Assert.Equal(data, ReadAll(reader, 300_001));
            Assert.True(reader.Finish());
            Assert.True(reader.Finish()); // asked again, the same answer
        }

        StoreStats stats = await store.GetStatsAsync(Ct);
        Assert.Equal(1, stats.Hits);
        Assert.Equal(data.Length, stats.BytesOut);
        Assert.Equal(0, stats.CorruptObjects);
    }

    [Fact]
    public async Task OpenRead_Missing_Null()
    {
        await using DiskKvStore store = _dir.Open();
        Assert.Null(store.OpenRead(TestObjects.KeyFor("absent")));
    }

    [Fact]
    public async Task Finish_CorruptBody_FalseAndObjectDiscarded()
    {
        await using DiskKvStore store = _dir.Open();
        ObjectKey key = TestObjects.KeyFor("rotten-body");
        await PutThenCorruptAsync(store, key, 1 << 20, at: 700_000);

        using (DiskKvStore.ObjectReader reader = store.OpenRead(key)!)
        {
            ReadAll(reader, 65_536);
            Assert.False(reader.Finish());
        }

        Assert.Equal(new[] { false }, await store.ExistsAsync([key], Ct));
        Assert.False(File.Exists(_dir.ObjectPath(key)));
        Assert.Equal(1, (await store.GetStatsAsync(Ct)).CorruptObjects);
    }

    [Fact]
    public async Task Read_CorruptHeader_ThrowsOnTheFirstReadAndObjectDiscarded()
    {
        await using DiskKvStore store = _dir.Open();
        ObjectKey key = TestObjects.KeyFor("rotten-head");
        await PutThenCorruptAsync(store, key, 100_000, at: 0); // the magic

        using (DiskKvStore.ObjectReader reader = store.OpenRead(key)!)
        {
            Assert.Throws<InvalidKvDataException>(() => reader.Read(new byte[4096]));
            Assert.False(reader.Finish());
        }

        Assert.Null(store.OpenRead(key));
        Assert.Equal(1, (await store.GetStatsAsync(Ct)).CorruptObjects);
    }

    [Fact]
    public async Task Finish_BeforeTheEnd_RefusedAndObjectKept()
    {
        await using DiskKvStore store = _dir.Open();
        ObjectKey key = TestObjects.KeyFor("half-read");
        await store.PutAsync(key, TestObjects.Container(key, 100_000, 4), Ct);

        using (DiskKvStore.ObjectReader reader = store.OpenRead(key)!)
        {
            reader.Read(new byte[1000]);
            Assert.Throws<InvalidOperationException>(() => reader.Finish());
        }

        Assert.Equal(new[] { true }, await store.ExistsAsync([key], Ct));
        Assert.Equal(0, (await store.GetStatsAsync(Ct)).CorruptObjects);
    }
}
