using System.Buffers;
using KvFetcher.Core.Containers;
using KvFetcher.Store.Disk;

namespace KvFetcher.Store.Tests.Disk;

public sealed class DiskKvStoreTests : IDisposable
{
    private readonly TempStoreDirectory _dir = new();

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Put_Objects_EachIsOneFileOfItsBytesNoTempLeft()
    {
        await using DiskKvStore store = _dir.Open();
        // 5 MiB crosses the store's 4 MiB read/write slices.
        foreach ((string name, int payload) in new[] { ("empty", 0), ("small", 1000), ("large", 5 << 20) })
        {
            ObjectKey key = TestObjects.KeyFor(name);
            byte[] data = TestObjects.Container(key, payload, seed: payload + 1);
            await store.PutAsync(key, data, Ct);

            Assert.Equal(data, await File.ReadAllBytesAsync(_dir.ObjectPath(key), Ct));
        }

        Assert.Equal(3, _dir.ObjectFiles().Length);
        Assert.Empty(_dir.TempFiles());
        Assert.Equal(store.RootPath, Path.GetFullPath(_dir.Path));
        Assert.Equal($"disk:{store.RootPath}", store.Description);
    }

    [Fact]
    public async Task Delete_StoredObject_RemovesFileAndEntry()
    {
        await using DiskKvStore store = _dir.Open();
        ObjectKey key = TestObjects.KeyFor("doomed");
        await store.PutAsync(key, TestObjects.Container(key, 500, 1), Ct);

        Assert.True(await store.DeleteAsync(key, Ct));

        Assert.False(File.Exists(_dir.ObjectPath(key)));
        Assert.Equal(new[] { false }, await store.ExistsAsync([key], Ct));
        Assert.Equal(StoreRead.Miss, await store.GetAsync(key, new ArrayBufferWriter<byte>(), cancellationToken: Ct));
        Assert.False(await store.DeleteAsync(key, Ct));
        StoreStats stats = await store.GetStatsAsync(Ct);
        Assert.Equal(0, stats.Objects);
        Assert.Equal(0, stats.UsedBytes);
    }

    [Fact]
    public async Task Put_SameKeyTwice_ReplacesObjectAndAccounting()
    {
        await using DiskKvStore store = _dir.Open();
        ObjectKey key = TestObjects.KeyFor("replaced");
        byte[] first = TestObjects.Container(key, 3000, 1);
        byte[] second = TestObjects.Container(key, 100, 2);

        await store.PutAsync(key, first, Ct);
        await store.PutAsync(key, second, Ct);

        var destination = new ArrayBufferWriter<byte>();
        await store.GetAsync(key, destination, cancellationToken: Ct);
        Assert.True(destination.WrittenSpan.SequenceEqual(second));
        StoreStats stats = await store.GetStatsAsync(Ct);
        Assert.Equal(1, stats.Objects);
        Assert.Equal(second.Length, stats.UsedBytes);
        Assert.Single(_dir.ObjectFiles());
    }

    [Fact]
    public async Task Stats_AfterTraffic_CountsEveryOperation()
    {
        await using DiskKvStore store = _dir.Open(capacity: 1 << 20);
        ObjectKey key = TestObjects.KeyFor("counted");
        byte[] data = TestObjects.Container(key, 1000, 1);
        await store.PutAsync(key, data, Ct);
        await store.GetAsync(key, new ArrayBufferWriter<byte>(), cancellationToken: Ct);
        await store.GetAsync(key, new ArrayBufferWriter<byte>(), new ByteRange(0, 100), Ct);
        await store.GetAsync(TestObjects.KeyFor("absent"), new ArrayBufferWriter<byte>(), cancellationToken: Ct);

        StoreStats stats = await store.GetStatsAsync(Ct);

        Assert.Equal(
            new StoreStats
            {
                Objects = 1,
                UsedBytes = data.Length,
                CapacityBytes = 1 << 20,
                Hits = 2,
                Misses = 1,
                BytesIn = data.Length,
                BytesOut = data.Length + 100,
                Evictions = 0,
                CorruptObjects = 0,
            },
            stats);
    }

    [Theory]
    [InlineData(20, false)] // header: chunk key
    [InlineData(ChunkContainer.HeaderSize + 300, false)] // payload
    [InlineData(ChunkContainer.HeaderSize + 300, true)] // a range elsewhere is refused too: the whole object is verified
    [InlineData(-1, false)] // checksum
    public async Task Get_ByteFlippedOnDisk_MissAndFileRemoved(int offset, bool ranged)
    {
        await using DiskKvStore store = _dir.Open();
        ObjectKey key = TestObjects.KeyFor("flipped");
        byte[] data = TestObjects.Container(key, 1000, 1);
        await store.PutAsync(key, data, Ct);
        string path = _dir.ObjectPath(key);
        byte[] onDisk = File.ReadAllBytes(path);
        onDisk[offset < 0 ? onDisk.Length + offset : offset] ^= 0x40;
        File.WriteAllBytes(path, onDisk);

        var destination = new ArrayBufferWriter<byte>();
        StoreRead read = await store.GetAsync(key, destination, ranged ? new ByteRange(0, 100) : ByteRange.All, Ct);

        Assert.Equal(StoreRead.Miss, read);
        Assert.Equal(0, destination.WrittenCount);
        Assert.False(File.Exists(path));
        Assert.Equal(new[] { false }, await store.ExistsAsync([key], Ct));
        StoreStats stats = await store.GetStatsAsync(Ct);
        Assert.Equal(1, stats.CorruptObjects);
        Assert.Equal(0, stats.UsedBytes);
        Assert.Equal(0, stats.Hits);
    }

    [Fact]
    public async Task Get_TruncatedOnDisk_MissAndFileRemoved()
    {
        await using DiskKvStore store = _dir.Open();
        ObjectKey whole = TestObjects.KeyFor("truncated-whole");
        ObjectKey ranged = TestObjects.KeyFor("truncated-ranged");
        foreach (ObjectKey key in new[] { whole, ranged })
        {
            await store.PutAsync(key, TestObjects.Container(key, 1000, 1), Ct);
            using FileStream file = File.OpenWrite(_dir.ObjectPath(key));
            file.SetLength(600);
        }

        var destination = new ArrayBufferWriter<byte>();
        Assert.Equal(StoreRead.Miss, await store.GetAsync(whole, destination, cancellationToken: Ct));
        // A range inside the intact part is still a miss: the whole object is verified first.
        Assert.Equal(StoreRead.Miss, await store.GetAsync(ranged, destination, new ByteRange(0, 100), Ct));

        Assert.Equal(0, destination.WrittenCount);
        Assert.Empty(_dir.ObjectFiles());
        StoreStats stats = await store.GetStatsAsync(Ct);
        Assert.Equal(2, stats.CorruptObjects);
        Assert.Equal(0, stats.Objects);
        Assert.Equal(0, stats.UsedBytes);
    }

    [Fact]
    public async Task Get_FileRemovedBehindStoresBack_Miss()
    {
        await using DiskKvStore store = _dir.Open();
        ObjectKey key = TestObjects.KeyFor("vanished");
        await store.PutAsync(key, TestObjects.Container(key, 100, 1), Ct);
        File.Delete(_dir.ObjectPath(key));

        Assert.Equal(StoreRead.Miss, await store.GetAsync(key, new ArrayBufferWriter<byte>(), cancellationToken: Ct));
        Assert.Equal(new[] { false }, await store.ExistsAsync([key], Ct));
        Assert.Equal(0, (await store.GetStatsAsync(Ct)).UsedBytes);
    }

    [Fact]
    public async Task Open_ExistingDirectory_IndexRebuiltAndObjectsReadable()
    {
        ObjectKey[] keys = [.. Enumerable.Range(0, 20).Select(i => TestObjects.KeyFor($"kept{i}"))];
        long total = 0;
        await using (DiskKvStore store = _dir.Open())
        {
            for (int i = 0; i < keys.Length; i++)
            {
                byte[] data = TestObjects.Container(keys[i], 100 * i, i);
                total += data.Length;
                await store.PutAsync(keys[i], data, Ct);
            }
        }

        await using DiskKvStore reopened = _dir.Open();

        StoreStats stats = await reopened.GetStatsAsync(Ct);
        Assert.Equal(keys.Length, stats.Objects);
        Assert.Equal(total, stats.UsedBytes);
        Assert.Equal(keys.Length, await reopened.LongestPrefixAsync(keys, Ct));
        for (int i = 0; i < keys.Length; i++)
        {
            var destination = new ArrayBufferWriter<byte>();
            Assert.True((await reopened.GetAsync(keys[i], destination, cancellationToken: Ct)).Found);
            Assert.True(destination.WrittenSpan.SequenceEqual(TestObjects.Container(keys[i], 100 * i, i)));
        }
    }

    [Fact]
    public async Task Open_LeftoversOfACrash_CleanedAndNeverVisible()
    {
        ObjectKey kept = TestObjects.KeyFor("kept");
        ObjectKey torn = TestObjects.KeyFor("torn");
        ObjectKey empty = TestObjects.KeyFor("empty");
        byte[] keptData = TestObjects.Container(kept, 300, 1);
        await using (DiskKvStore store = _dir.Open())
        {
            await store.PutAsync(kept, keptData, Ct);
        }

        // What a process killed mid-put leaves: temp files of any length (never renamed), and, only with fsync off and a
        // power loss, an object file whose data never reached the disk.
        byte[] tornData = TestObjects.Container(torn, 5000, 2);
        File.WriteAllBytes(Path.Combine(_dir.TempFolder, "00000000000000aa.tmp"), []);
        File.WriteAllBytes(Path.Combine(_dir.TempFolder, "00000000000000ab.tmp"), tornData[..2000]);
        Directory.CreateDirectory(Path.Combine(_dir.TempFolder, "stray"));
        File.WriteAllBytes(Path.Combine(_dir.TempFolder, "stray", "x.tmp"), tornData);
        Directory.CreateDirectory(Path.GetDirectoryName(_dir.ObjectPath(empty))!);
        File.WriteAllBytes(_dir.ObjectPath(empty), []);

        await using DiskKvStore reopened = _dir.Open();

        Assert.Empty(_dir.TempFiles());
        Assert.False(File.Exists(_dir.ObjectPath(empty)));
        Assert.Equal(new[] { true, false, false }, await reopened.ExistsAsync([kept, torn, empty], Ct));
        Assert.Equal(StoreRead.Miss, await reopened.GetAsync(torn, new ArrayBufferWriter<byte>(), cancellationToken: Ct));
        StoreStats stats = await reopened.GetStatsAsync(Ct);
        Assert.Equal(1, stats.Objects);
        Assert.Equal(keptData.Length, stats.UsedBytes);
        var destination = new ArrayBufferWriter<byte>();
        await reopened.GetAsync(kept, destination, cancellationToken: Ct);
        Assert.True(destination.WrittenSpan.SequenceEqual(keptData));
    }

    [Fact]
    public async Task Open_DirectoryInUse_KvStoreException()
    {
        await using DiskKvStore store = _dir.Open();

        KvStoreException ex = Assert.Throws<KvStoreException>(() => _dir.Open());

        Assert.Contains("in use", ex.Message, StringComparison.Ordinal);
        await store.DisposeAsync();
        await using DiskKvStore second = _dir.Open();
    }

    [Fact]
    public async Task Put_TempFolderUnusable_KvStoreExceptionNamingPathAndNothingVisible()
    {
        await using DiskKvStore store = _dir.Open(capacity: 1 << 20);
        ObjectKey key = TestObjects.KeyFor("unwritable");
        Directory.Delete(_dir.TempFolder);
        File.WriteAllBytes(_dir.TempFolder, []); // tmp is now a file: creating a temp file in it fails (ENOTDIR)

        KvStoreException ex = await Assert.ThrowsAsync<KvStoreException>(async () => await store.PutAsync(key, TestObjects.Container(key, 100, 1), Ct));

        Assert.Contains(_dir.TempFolder, ex.Message, StringComparison.Ordinal);
        Assert.Equal(new[] { false }, await store.ExistsAsync([key], Ct));
        Assert.Empty(_dir.ObjectFiles());
        StoreStats stats = await store.GetStatsAsync(Ct);
        Assert.Equal(0, stats.UsedBytes);
        Assert.Equal(0, stats.BytesIn);
    }

    [Fact]
    public async Task Put_RenameFails_KvStoreExceptionAndTempFileRemoved()
    {
        await using DiskKvStore store = _dir.Open(capacity: 1 << 20);
        ObjectKey key = TestObjects.KeyFor("blocked");
        // The object's name is taken by a directory: the rename over it fails (EISDIR) after the temp file was written.
        Directory.CreateDirectory(_dir.ObjectPath(key));

        KvStoreException ex = await Assert.ThrowsAsync<KvStoreException>(async () => await store.PutAsync(key, TestObjects.Container(key, 100, 1), Ct));

        Assert.Contains(_dir.ObjectPath(key), ex.Message, StringComparison.Ordinal);
        Assert.Empty(_dir.TempFiles());
        Assert.Equal(new[] { false }, await store.ExistsAsync([key], Ct));
        Assert.Equal(0, (await store.GetStatsAsync(Ct)).UsedBytes);
    }

    [Fact]
    public void Open_InvalidOptions_ArgumentException()
    {
        Assert.Throws<ArgumentException>(() => DiskKvStore.Open(new DiskKvStoreOptions { Directory = " " }));
        Assert.Throws<ArgumentOutOfRangeException>(() => DiskKvStore.Open(new DiskKvStoreOptions { Directory = _dir.Path, CapacityBytes = 0 }));
    }
}
