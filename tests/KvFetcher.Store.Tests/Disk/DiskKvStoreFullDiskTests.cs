using System.Buffers;
using KvFetcher.Store.Disk;

namespace KvFetcher.Store.Tests.Disk;

/// <summary>
/// A filesystem that fills up before the store's capacity (or without one): ENOSPC evicts least recently used objects
/// and the put goes on; with nothing left to evict, it is refused with <see cref="KvStoreFullException"/> (507 over HTTP).
/// Runs on a real, small tmpfs (root only; skipped elsewhere).
/// </summary>
public sealed class DiskKvStoreFullDiskTests
{
    /// <summary>About 100 KB per object: 25 tmpfs pages, so ten fit in 1 MiB.</summary>
    private const int Payload = 100_000;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Put_FilesystemFull_EvictsLeastRecentlyUsedAndStores()
    {
        using SmallFilesystem fs = SmallFilesystem.Mount(kibibytes: 1024);
        await using DiskKvStore store = DiskKvStore.Open(new DiskKvStoreOptions { Directory = Path.Combine(fs.Path, "store") });
        ObjectKey[] keys = [.. Enumerable.Range(0, 16).Select(i => TestObjects.KeyFor($"full-{i}"))];
        for (int i = 0; i < keys.Length; i++)
        {
            if (i > 0)
            {
                // The first object stays the most recently used one: eviction must pass it over.
                Assert.True((await store.GetAsync(keys[0], new ArrayBufferWriter<byte>(), cancellationToken: Ct)).Found, $"object 0 gone before put {i}");
            }

            await store.PutAsync(keys[i], TestObjects.Container(keys[i], Payload, i), Ct);
        }

        bool[] present = await store.ExistsAsync(keys, Ct);
        StoreStats stats = await store.GetStatsAsync(Ct);
        int evicted = present.Count(p => !p);
        Assert.True(evicted >= 6, $"{evicted} evicted of {keys.Length} (1 MiB holds about ten)");
        Assert.Equal(evicted, stats.Evictions);
        Assert.True(present[0], "the most recently read object was evicted");
        Assert.True(present[^1]);
        // Least recently used first: the evicted ones are the oldest after object 0.
        Assert.Equal(Enumerable.Repeat(false, evicted), present[1..(evicted + 1)]);
        Assert.All(present[(evicted + 1)..], Assert.True);
        for (int i = 0; i < keys.Length; i++)
        {
            var read = new ArrayBufferWriter<byte>();
            if ((await store.GetAsync(keys[i], read, cancellationToken: Ct)).Found)
            {
                Assert.Equal(TestObjects.Container(keys[i], Payload, i), read.WrittenSpan.ToArray());
            }
        }

        Assert.Empty(Directory.GetFiles(Path.Combine(fs.Path, "store", "tmp")));
    }

    [Fact]
    public async Task OpenWrite_FilesystemFull_EvictsBeforeAnyByteIsWritten()
    {
        using SmallFilesystem fs = SmallFilesystem.Mount(kibibytes: 1024);
        await using DiskKvStore store = DiskKvStore.Open(new DiskKvStoreOptions { Directory = Path.Combine(fs.Path, "store") });
        ObjectKey[] keys = [.. Enumerable.Range(0, 9).Select(i => TestObjects.KeyFor($"filled-{i}"))];
        for (int i = 0; i < keys.Length; i++)
        {
            await store.PutAsync(keys[i], TestObjects.Container(keys[i], Payload, i), Ct);
        }

        // A streamed put three objects large: its blocks are allocated at open, so the room is made (oldest first)
        // before the caller hands over a byte, and the write itself cannot run out of space.
        ObjectKey big = TestObjects.KeyFor("big");
        byte[] data = TestObjects.Container(big, 3 * Payload, 99);
        using (DiskKvStore.ObjectWriter writer = await store.OpenWriteAsync(big, data.Length, Ct))
        {
            Assert.True((await store.GetStatsAsync(Ct)).Evictions >= 1, "nothing was evicted before the body was written");
            writer.Write(data);
            writer.Commit();
        }

        bool[] present = await store.ExistsAsync(keys, Ct);
        Assert.False(present[0]);
        Assert.True(present[^1]);
        var read = new ArrayBufferWriter<byte>();
        Assert.True((await store.GetAsync(big, read, cancellationToken: Ct)).Found);
        Assert.Equal(data, read.WrittenSpan.ToArray());
        Assert.Empty(Directory.GetFiles(Path.Combine(fs.Path, "store", "tmp")));
    }

    [Fact]
    public async Task Put_FilesystemFullNothingToEvict_KvStoreFullExceptionAndStoreStillServes()
    {
        using SmallFilesystem fs = SmallFilesystem.Mount(kibibytes: 512);
        await using DiskKvStore store = DiskKvStore.Open(new DiskKvStoreOptions { Directory = Path.Combine(fs.Path, "store"), CapacityBytes = 100L << 20 });
        fs.FillLeaving(64 << 10);
        ObjectKey big = TestObjects.KeyFor("too-big-for-the-disk");

        KvStoreFullException full = await Assert.ThrowsAsync<KvStoreFullException>(async () => await store.PutAsync(big, TestObjects.Container(big, 2 * Payload, 1), Ct));

        Assert.Contains("no space left", full.Message, StringComparison.Ordinal);
        // One refusal, not a refusal wrapped in another: the cause underneath is the filesystem's own error.
        Assert.IsType<IOException>(full.InnerException, exactMatch: false);
        Assert.IsNotType<KvStoreFullException>(full.InnerException);
        Assert.Empty(Directory.GetFiles(Path.Combine(fs.Path, "store", "tmp")));
        Assert.Equal(0, (await store.GetStatsAsync(Ct)).UsedBytes);
        ObjectKey small = TestObjects.KeyFor("fits");
        byte[] container = TestObjects.Container(small, 10_000, 2);
        await store.PutAsync(small, container, Ct);
        var read = new ArrayBufferWriter<byte>();
        Assert.True((await store.GetAsync(small, read, cancellationToken: Ct)).Found);
        Assert.Equal(container, read.WrittenSpan.ToArray());
    }
}
