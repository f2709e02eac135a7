using System.Buffers;
using KvFetcher.Core;
using KvFetcher.Store.Disk;

namespace KvFetcher.Store.Tests.Disk;

/// <summary>
/// <see cref="DiskKvStore.OpenWriteAsync"/>, the store server's streamed PUT: bytes written as they arrive, the header
/// checked when it passes, the checksum at <see cref="DiskKvStore.ObjectWriter.Commit"/>; until then any stored object
/// stays as it was, and an abandoned put leaves nothing behind.
/// </summary>
public sealed class DiskObjectWriterTests : IDisposable
{
    private readonly TempStoreDirectory _dir = new();

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public void Dispose() => _dir.Dispose();

    private static void WriteInSlices(DiskKvStore.ObjectWriter writer, ReadOnlySpan<byte> data, int slice)
    {
        for (int at = 0; at < data.Length; at += slice)
        {
            writer.Write(data.Slice(at, Math.Min(slice, data.Length - at)));
        }
    }

    private static async Task<byte[]?> ReadAsync(DiskKvStore store, ObjectKey key)
    {
        var read = new ArrayBufferWriter<byte>();
        return (await store.GetAsync(key, read, cancellationToken: Ct)).Found ? read.WrittenSpan.ToArray() : null;
    }

    [Fact]
    public async Task OpenWrite_IntactObjectInSlices_StoredAndReadBack()
    {
        await using DiskKvStore store = _dir.Open(capacity: 16 << 20);
        ObjectKey key = TestObjects.KeyFor("streamed-put");
        byte[] data = TestObjects.Container(key, (3 << 20) + 11, 1);
        using (DiskKvStore.ObjectWriter writer = await store.OpenWriteAsync(key, data.Length, Ct))
        {
            // Slices that cut the header and the trailing checksum apart.
            WriteInSlices(writer, data, 65_519);
            Assert.Equal(data.Length, writer.Written);
            writer.Commit();
        }

        Assert.Equal(data, await ReadAsync(store, key));
        StoreStats stats = await store.GetStatsAsync(Ct);
        Assert.Equal(data.Length, stats.UsedBytes);
        Assert.Equal(data.Length, stats.BytesIn);
        Assert.Empty(_dir.TempFiles());
    }

    [Fact]
    public async Task Commit_CorruptBody_RefusedAndOldObjectKept()
    {
        await using DiskKvStore store = _dir.Open(capacity: 16 << 20);
        ObjectKey key = TestObjects.KeyFor("replaced");
        byte[] old = TestObjects.Container(key, 200_000, 1);
        await store.PutAsync(key, old, Ct);
        byte[] corrupt = TestObjects.Container(key, 300_000, 2);
        corrupt[150_000] ^= 0x01;

        using (DiskKvStore.ObjectWriter writer = await store.OpenWriteAsync(key, corrupt.Length, Ct))
        {
            WriteInSlices(writer, corrupt, 70_000);
            Assert.Throws<InvalidKvDataException>(writer.Commit);
        }

        Assert.Equal(old, await ReadAsync(store, key));
        Assert.Equal(old.Length, (await store.GetStatsAsync(Ct)).UsedBytes);
        Assert.Empty(_dir.TempFiles());
    }

    [Fact]
    public async Task Write_MalformedHeader_RefusedWhenTheHeaderPasses()
    {
        await using DiskKvStore store = _dir.Open();
        ObjectKey key = TestObjects.KeyFor("bad-header");
        byte[] data = TestObjects.Container(key, 100_000, 1);
        data[0] ^= 0xff; // the magic

        using DiskKvStore.ObjectWriter writer = await store.OpenWriteAsync(key, data.Length, Ct);
        Assert.Throws<InvalidKvDataException>(() => writer.Write(data.AsSpan(0, 4096)));
    }

    [Fact]
    public async Task Write_MoreBytesThanAnnounced_Refused()
    {
        await using DiskKvStore store = _dir.Open();
        ObjectKey key = TestObjects.KeyFor("too-long");
        byte[] data = TestObjects.Container(key, 10_000, 1);

        using DiskKvStore.ObjectWriter writer = await store.OpenWriteAsync(key, data.Length, Ct);
        writer.Write(data);
        Assert.Throws<InvalidKvDataException>(() => writer.Write(new byte[1]));
        Assert.Equal(data.Length, writer.Written);
    }

    [Fact]
    public async Task Dispose_Uncommitted_NothingStoredAndReservationFreed()
    {
        // The capacity holds one object: an abandoned put that kept its reservation would make the next put wait.
        ObjectKey key = TestObjects.KeyFor("abandoned");
        byte[] data = TestObjects.Container(key, 500_000, 1);
        await using DiskKvStore store = _dir.Open(capacity: data.Length);
        using (DiskKvStore.ObjectWriter writer = await store.OpenWriteAsync(key, data.Length, Ct))
        {
            writer.Write(data.AsSpan(0, data.Length / 2));
            Assert.Throws<InvalidOperationException>(writer.Commit); // bytes missing
        }

        Assert.Null(await ReadAsync(store, key));
        Assert.Empty(_dir.TempFiles());
        Assert.Equal(0, (await store.GetStatsAsync(Ct)).UsedBytes);
        await store.PutAsync(key, data, Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(10), Ct);
        Assert.Equal(data, await ReadAsync(store, key));
    }

    [Fact]
    public async Task OpenWrite_LengthShorterThanAnyContainerOrOverCapacity_Refused()
    {
        await using DiskKvStore store = _dir.Open(capacity: 1 << 20);
        ObjectKey key = TestObjects.KeyFor("sizes");
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await store.OpenWriteAsync(key, 10, Ct));
        await Assert.ThrowsAsync<KvStoreFullException>(async () => await store.OpenWriteAsync(key, 2 << 20, Ct));
        Assert.Empty(_dir.TempFiles());
    }
}
