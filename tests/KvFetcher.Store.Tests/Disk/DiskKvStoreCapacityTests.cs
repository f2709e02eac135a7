using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using KvFetcher.Store.Disk;

namespace KvFetcher.Store.Tests.Disk;

/// <summary>Capacity, LRU eviction, pinning and concurrency of <see cref="DiskKvStore"/>.</summary>
public sealed class DiskKvStoreCapacityTests : IDisposable
{
    private const int Payload = 1000;

    /// <summary>The largest payload <see cref="SizeFor"/> gives.</summary>
    private const int MaxPayload = 20200;

    private static readonly int s_objectSize = TestObjects.SizeOf(Payload);

    private readonly TempStoreDirectory _dir = new();

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Put_LargerThanCapacity_KvStoreFullException()
    {
        await using DiskKvStore store = _dir.Open(capacity: s_objectSize - 1);
        ObjectKey key = TestObjects.KeyFor("huge");

        await Assert.ThrowsAsync<KvStoreFullException>(async () => await store.PutAsync(key, TestObjects.Container(key, Payload, 1), Ct));

        Assert.Empty(_dir.TempFiles());
        Assert.Empty(_dir.ObjectFiles());
    }

    [Fact]
    public async Task Put_OverCapacity_EvictsLeastRecentlyUsed()
    {
        await using DiskKvStore store = _dir.Open(capacity: 3 * s_objectSize);
        ObjectKey[] k = [.. "ABCDE".Select(c => TestObjects.KeyFor(c.ToString()))];
        for (int i = 0; i < 3; i++)
        {
            await Put(store, k[i], i);
        }

        await store.GetAsync(k[0], new ArrayBufferWriter<byte>(), cancellationToken: Ct); // A is now the most recent: B, C, A
        await Put(store, k[3], 3); // evicts B
        Assert.Equal(new[] { true, false, true, true }, await store.ExistsAsync(k[..4], Ct));

        await store.GetAsync(k[2], new ArrayBufferWriter<byte>(), new ByteRange(0, 10), Ct); // a ranged get counts too: A, D, C
        await Put(store, k[4], 4); // evicts A
        Assert.Equal(new[] { false, false, true, true, true }, await store.ExistsAsync(k, Ct));

        StoreStats stats = await store.GetStatsAsync(Ct);
        Assert.Equal(2, stats.Evictions);
        Assert.Equal(3 * s_objectSize, stats.UsedBytes);
        Assert.Equal(3, _dir.ObjectFiles().Length);
    }

    [Fact]
    public async Task Open_Reopen_RecencyKeptAndSmallerCapacityEvictsOldest()
    {
        ObjectKey[] k = [.. "ABCD".Select(c => TestObjects.KeyFor(c.ToString()))];
        await using (DiskKvStore store = _dir.Open())
        {
            for (int i = 0; i < 4; i++)
            {
                await Put(store, k[i], i);
            }

            // C, D, B, A. (The file system's own relatime updates would give C, D, A, B: only the first read of a
            // file after its write moves its access time.)
            foreach (int i in new[] { 0, 1, 0 })
            {
                await store.GetAsync(k[i], new ArrayBufferWriter<byte>(), cancellationToken: Ct);
            }
        }

        await using (DiskKvStore reopened = _dir.Open(capacity: 3 * s_objectSize))
        {
            // Opening with a smaller capacity evicts down to it, oldest first: C.
            Assert.Equal(new[] { true, true, false, true }, await reopened.ExistsAsync(k, Ct));
            Assert.Equal(1, (await reopened.GetStatsAsync(Ct)).Evictions);
        }

        await using DiskKvStore again = _dir.Open(capacity: s_objectSize);
        Assert.Equal(new[] { true, false, false, false }, await again.ExistsAsync(k, Ct));
    }

    [Fact]
    public async Task Put_LeastRecentIsBeingRead_PinnedObjectSurvivesAndPutWaitsForTheRead()
    {
        await using DiskKvStore store = _dir.Open(capacity: 2 * s_objectSize);
        ObjectKey a = TestObjects.KeyFor("A");
        ObjectKey b = TestObjects.KeyFor("B");
        ObjectKey c = TestObjects.KeyFor("C");
        ObjectKey big = TestObjects.KeyFor("big");
        await Put(store, a, 1);
        await Put(store, b, 2);
        using var reader = new BlockingWriter();
        Task<StoreRead> pinned = Task.Run(async () => await store.GetAsync(a, reader, cancellationToken: Ct), Ct);
        reader.WaitEntered();
        await store.GetAsync(b, new ArrayBufferWriter<byte>(), cancellationToken: Ct); // A is least recent now, but pinned

        await Put(store, c, 3);

        Assert.Equal(new[] { true, false, true }, await store.ExistsAsync([a, b, c], Ct));

        // An object needing both slots must wait for the read of A: only C is evictable meanwhile.
        byte[] bigData = TestObjects.Container(big, 2 * Payload, 4);
        Task bigPut = store.PutAsync(big, bigData, Ct).AsTask();
        await Task.Delay(200, Ct);
        Assert.False(bigPut.IsCompleted, "the put did not wait for the pinned object");
        Assert.Equal(new[] { true, false }, await store.ExistsAsync([a, big], Ct));
        Assert.True((await store.GetStatsAsync(Ct)).UsedBytes <= 2 * s_objectSize);

        reader.Release();
        Assert.True((await pinned).Found);
        Assert.True(reader.WrittenSpan.SequenceEqual(TestObjects.Container(a, Payload, 1)));
        await bigPut;
        Assert.Equal(new[] { false, false, false, true }, await store.ExistsAsync([a, b, c, big], Ct));
        Assert.Equal(bigData.Length, _dir.ObjectFiles().Sum(f => f.Length));
        Assert.Equal(bigData.Length, (await store.GetStatsAsync(Ct)).UsedBytes);
    }

    [Fact]
    public async Task Put_WaitingForPinnedSpace_Cancellable()
    {
        await using DiskKvStore store = _dir.Open(capacity: s_objectSize);
        ObjectKey a = TestObjects.KeyFor("A");
        ObjectKey b = TestObjects.KeyFor("B");
        await Put(store, a, 1);
        using var reader = new BlockingWriter();
        Task<StoreRead> pinned = Task.Run(async () => await store.GetAsync(a, reader, cancellationToken: Ct), Ct);
        reader.WaitEntered();
        using var cancel = new CancellationTokenSource();

        ValueTask waiting = store.PutAsync(b, TestObjects.Container(b, Payload, 2), cancel.Token);
        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await waiting);
        reader.Release();
        Assert.True((await pinned).Found);
        Assert.Equal(new[] { true, false }, await store.ExistsAsync([a, b], Ct));
        Assert.Empty(_dir.TempFiles());
        Assert.Equal(s_objectSize, (await store.GetStatsAsync(Ct)).UsedBytes);
    }

    [Fact]
    public async Task Delete_WhileBeingRead_ReaderGetsObjectAndBytesCountedUntilItEnds()
    {
        await using DiskKvStore store = _dir.Open(capacity: 2 * s_objectSize);
        ObjectKey a = TestObjects.KeyFor("A");
        ObjectKey b = TestObjects.KeyFor("B");
        await Put(store, a, 1);
        using var reader = new BlockingWriter();
        Task<StoreRead> reading = Task.Run(async () => await store.GetAsync(a, reader, cancellationToken: Ct), Ct);
        reader.WaitEntered();

        Assert.True(await store.DeleteAsync(a, Ct));
        await Put(store, b, 2);

        // A's name is gone, but its blocks are held by the open reader: they still count, so a second object of the
        // same size cannot fit yet.
        StoreStats during = await store.GetStatsAsync(Ct);
        Assert.Equal(1, during.Objects);
        Assert.Equal(2 * s_objectSize, during.UsedBytes);
        ObjectKey c = TestObjects.KeyFor("C");
        await Put(store, c, 3); // evicts B, the only evictable object
        Assert.Equal(new[] { false, false, true }, await store.ExistsAsync([a, b, c], Ct));

        reader.Release();
        Assert.True((await reading).Found);
        Assert.True(reader.WrittenSpan.SequenceEqual(TestObjects.Container(a, Payload, 1)));
        Assert.Equal(s_objectSize, (await store.GetStatsAsync(Ct)).UsedBytes);
    }

    [Fact]
    public async Task Put_32ConcurrentWritersOverCapacity_UsageNeverAboveCap()
    {
        const int Writers = 32;
        const int PutsPerWriter = 12;
        // Room for two of the largest objects: concurrent puts often hold more in reservations than can be evicted,
        // and must then wait for them rather than fail.
        long capacity = 2 * TestObjects.SizeOf(MaxPayload);
        await using DiskKvStore store = _dir.Open(capacity);
        long highestSeen = 0;
        using var done = new CancellationTokenSource();
        Task monitor = Task.Run(
            async () =>
            {
                while (!done.IsCancellationRequested)
                {
                    long used = (await store.GetStatsAsync(Ct)).UsedBytes;
                    InterlockedMax(ref highestSeen, used);
                    await Task.Yield();
                }
            },
            Ct);

        // Each writer owns its keys, so it knows the only version a hit may return; it also reads others' keys.
        var latest = new ConcurrentDictionary<ObjectKey, int>();
        Task[] writers = [.. Enumerable.Range(0, Writers).Select(w => Task.Run(
            async () =>
            {
                var random = new Random(w);
                for (int i = 0; i < PutsPerWriter; i++)
                {
                    ObjectKey key = TestObjects.KeyFor($"w{w}-{i % 4}");
                    int seed = (w * 1000) + i;
                    await store.PutAsync(key, TestObjects.Container(key, SizeFor(seed), seed), Ct);
                    latest[key] = seed;
                    ObjectKey other = TestObjects.KeyFor($"w{random.Next(Writers)}-{random.Next(4)}");
                    await CheckedGet(store, other, expectedSeed: null, mayBeEvicted: true);
                }
            },
            Ct))];
        await Task.WhenAll(writers);
        await done.CancelAsync();
        await monitor;

        StoreStats stats = await store.GetStatsAsync(Ct);
        FileInfo[] files = _dir.ObjectFiles();
        Assert.True(highestSeen <= capacity, $"used bytes reached {highestSeen} > {capacity}");
        Assert.True(stats.UsedBytes <= capacity);
        Assert.Equal(stats.UsedBytes, files.Sum(f => f.Length));
        Assert.Equal(stats.Objects, files.Length);
        Assert.True(stats.Evictions > 0, "the workload should have needed evictions");
        Assert.Empty(_dir.TempFiles());
        foreach ((ObjectKey key, int seed) in latest)
        {
            await CheckedGet(store, key, expectedSeed: seed, mayBeEvicted: true);
        }
    }

    [Fact]
    public async Task MixedTraffic_32Tasks_EveryHitIsTheRightObjectAndEveryAckedPutReadsBack()
    {
        const int Tasks = 32;
        const int KeysPerTask = 4;
        await using DiskKvStore store = _dir.Open(fsync: false);
        int nextSeed = 0;
        var deadline = Stopwatch.StartNew();
        long operations = 0;

        Task[] workers = [.. Enumerable.Range(0, Tasks).Select(t => Task.Run(
            async () =>
            {
                var random = new Random(t);
                // This task is the only writer of its keys: what it last put (or -1: deleted / never put) is the only
                // thing a get of them may return.
                int[] mine = [.. Enumerable.Repeat(-1, KeysPerTask)];
                while (deadline.Elapsed < TimeSpan.FromSeconds(2))
                {
                    int slot = random.Next(KeysPerTask);
                    ObjectKey key = TestObjects.KeyFor($"t{t}-{slot}");
                    int op = random.Next(100);
                    if (op < 40)
                    {
                        int seed = Interlocked.Increment(ref nextSeed);
                        await store.PutAsync(key, TestObjects.Container(key, SizeFor(seed), seed), Ct);
                        mine[slot] = seed;
                    }
                    else if (op < 50)
                    {
                        Assert.Equal(mine[slot] >= 0, await store.DeleteAsync(key, Ct));
                        mine[slot] = -1;
                    }
                    else if (op < 75)
                    {
                        await CheckedGet(store, key, expectedSeed: mine[slot], mayBeEvicted: false);
                    }
                    else
                    {
                        // Someone else's key: any version they put, but always theirs and byte-exact.
                        await CheckedGet(store, TestObjects.KeyFor($"t{random.Next(Tasks)}-{random.Next(KeysPerTask)}"), expectedSeed: null, mayBeEvicted: false);
                    }

                    Interlocked.Increment(ref operations);
                }

                for (int slot = 0; slot < KeysPerTask; slot++)
                {
                    await CheckedGet(store, TestObjects.KeyFor($"t{t}-{slot}"), expectedSeed: mine[slot], mayBeEvicted: false);
                }
            },
            Ct))];
        await Task.WhenAll(workers);

        StoreStats stats = await store.GetStatsAsync(Ct);
        FileInfo[] files = _dir.ObjectFiles();
        Assert.Equal(stats.Objects, files.Length);
        Assert.Equal(stats.UsedBytes, files.Sum(f => f.Length));
        Assert.Equal(0, stats.CorruptObjects);
        Assert.Empty(_dir.TempFiles());
        TestContext.Current.TestOutputHelper?.WriteLine($"{operations} operations in 2 s, {stats.Hits} hits, {stats.Misses} misses");
    }

    /// <summary>Payload sizes from ~200 B to ~20 KB, derived from the seed so a reader can rebuild the expected bytes.</summary>
    private static int SizeFor(int seed) => 200 + (int)((uint)seed * 2654435761u % (MaxPayload - 200));

    private static async Task Put(DiskKvStore store, ObjectKey key, int seed) =>
        await store.PutAsync(key, TestObjects.Container(key, Payload, seed), Ct);

    /// <summary>
    /// Gets <paramref name="key"/>; a hit must be a container made for that key, byte-exact to the one its seed makes.
    /// With <paramref name="expectedSeed"/> the outcome is known: that version (or an eviction's miss when
    /// <paramref name="mayBeEvicted"/>), or a miss when it is -1.
    /// </summary>
    private static async Task CheckedGet(DiskKvStore store, ObjectKey key, int? expectedSeed, bool mayBeEvicted)
    {
        var destination = new ArrayBufferWriter<byte>();
        StoreRead read = await store.GetAsync(key, destination, cancellationToken: Ct);
        if (expectedSeed == -1)
        {
            Assert.False(read.Found, $"{key} was deleted but a get found it");
        }

        if (!read.Found)
        {
            Assert.True(expectedSeed is null or -1 || mayBeEvicted, $"{key} version {expectedSeed} was acknowledged but a get missed it");
            Assert.Equal(0, destination.WrittenCount);
            return;
        }

        Assert.True(TestObjects.IsFor(destination.WrittenSpan, key, out int seed), $"a get of {key} returned another object's bytes");
        Assert.True(destination.WrittenSpan.SequenceEqual(TestObjects.Container(key, SizeFor(seed), seed)));
        if (expectedSeed is int expected)
        {
            Assert.Equal(expected, seed);
        }
    }

    private static void InterlockedMax(ref long target, long value)
    {
        long seen = Volatile.Read(ref target);
        while (value > seen)
        {
            long previous = Interlocked.CompareExchange(ref target, value, seen);
            if (previous == seen)
            {
                return;
            }

            seen = previous;
        }
    }
}
