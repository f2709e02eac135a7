using System.Buffers;

namespace KvFetcher.Store.Tests.Contract;

/// <summary>
/// The <see cref="IKvStore"/> contract, written once and run against every store: a subclass opens a fresh, empty
/// store (a temp directory, a server on a loopback port, a key prefix of its own on a real Redis) and these tests
/// check what every store promises. Store-specific behaviour (files, parts, HTTP status codes) stays in each store's
/// own tests.
/// </summary>
public abstract class KvStoreContractTests : IAsyncLifetime
{
    private const int Large = 5 << 20; // crosses the disk store's 4 MiB slices and Redis's 1 MiB parts

    private readonly List<Func<ValueTask>> _owned = [];
    private IKvStore? _store;

    protected static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>The store under test, fresh and empty for each test.</summary>
    protected IKvStore Store => _store ?? throw new InvalidOperationException("The store has not been opened.");

    /// <summary>Opens a fresh, empty store of the kind under test (disposed after the test).</summary>
    protected abstract ValueTask<IKvStore> OpenAsync();

    /// <summary>
    /// Opens a fresh store that refuses objects larger than <paramref name="maxObjectBytes"/> bytes (a capacity, or a
    /// server's body limit), or null when this kind of store has no such limit.
    /// </summary>
    protected abstract ValueTask<IKvStore?> OpenLimitedAsync(long maxObjectBytes);

    /// <summary>Disposes <paramref name="owned"/> (a server) after the test, after the stores.</summary>
    protected void Own(IAsyncDisposable owned) => _owned.Add(owned.DisposeAsync);

    /// <summary>Disposes <paramref name="owned"/> (a temp directory) after the test, after the stores.</summary>
    protected void Own(IDisposable owned) => _owned.Add(() =>
    {
        owned.Dispose();
        return ValueTask.CompletedTask;
    });

    public async ValueTask InitializeAsync() => _store = await OpenAsync();

    public async ValueTask DisposeAsync()
    {
        if (_store is not null)
        {
            await _store.DisposeAsync();
        }

        for (int i = _owned.Count - 1; i >= 0; i--)
        {
            await _owned[i]();
        }

        GC.SuppressFinalize(this);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1000)]
    [InlineData(Large)]
    public async Task PutGet_Object_RoundTripsByteExact(int payload)
    {
        ObjectKey key = TestObjects.KeyFor($"round-trip-{payload}");
        byte[] data = TestObjects.Container(key, payload, seed: payload + 1);

        await Store.PutAsync(key, data, Ct);
        var destination = new ArrayBufferWriter<byte>();
        StoreRead read = await Store.GetAsync(key, destination, cancellationToken: Ct);

        Assert.Equal(new StoreRead(Found: true, ObjectLength: data.Length, BytesWritten: data.Length), read);
        Assert.True(destination.WrittenSpan.SequenceEqual(data));
    }

    [Fact]
    public async Task Get_Absent_MissWritingNothing()
    {
        var destination = new ArrayBufferWriter<byte>();

        StoreRead read = await Store.GetAsync(TestObjects.KeyFor("absent"), destination, cancellationToken: Ct);

        Assert.Equal(StoreRead.Miss, read);
        Assert.Equal(0, destination.WrittenCount);
    }

    [Fact]
    public async Task Put_SameKeyAgain_LatestObjectServed()
    {
        ObjectKey key = TestObjects.KeyFor("overwritten");
        byte[][] versions = [TestObjects.Container(key, Large, 1), TestObjects.Container(key, 3000, 2), TestObjects.Container(key, 200_000, 3)];

        foreach (byte[] version in versions)
        {
            await Store.PutAsync(key, version, Ct);
            Assert.Equal(version, await GetBytesAsync(key));
        }

        Assert.Equal(new[] { true }, await Store.ExistsAsync([key], Ct));
    }

    [Fact]
    public async Task Delete_StoredObject_GoneAndSecondDeleteFalse()
    {
        ObjectKey key = TestObjects.KeyFor("doomed");
        ObjectKey kept = TestObjects.KeyFor("kept");
        await Store.PutAsync(key, TestObjects.Container(key, Large, 1), Ct);
        await Store.PutAsync(kept, TestObjects.Container(kept, 100, 2), Ct);

        Assert.True(await Store.DeleteAsync(key, Ct));

        Assert.Null(await GetBytesAsync(key));
        Assert.Equal(new[] { false, true }, await Store.ExistsAsync([key, kept], Ct));
        Assert.False(await Store.DeleteAsync(key, Ct));
        Assert.False(await Store.DeleteAsync(TestObjects.KeyFor("never-stored"), Ct));
        Assert.NotNull(await GetBytesAsync(kept));
    }

    [Fact]
    public async Task ExistsAndLongestPrefix_Chain_StoredKeysInOrder()
    {
        ObjectKey[] chain = [.. Enumerable.Range(0, 8).Select(i => TestObjects.KeyFor($"chain-{i}"))];
        foreach (int i in (int[])[0, 1, 2, 3, 4, 6])
        {
            await Store.PutAsync(chain[i], TestObjects.Container(chain[i], 100, i), Ct);
        }

        Assert.Equal(new[] { true, true, true, true, true, false, true, false }, await Store.ExistsAsync(chain, Ct));
        Assert.Equal(5, await Store.LongestPrefixAsync(chain, Ct));
        Assert.Equal(0, await Store.LongestPrefixAsync(chain[5..], Ct));
        Assert.Equal(1, await Store.LongestPrefixAsync(chain[6..], Ct));
        Assert.Equal(0, await Store.LongestPrefixAsync([], Ct));
        Assert.Empty(await Store.ExistsAsync([], Ct));
    }

    [Fact]
    public async Task ExistsAndLongestPrefix_ThousandsOfKeys_AnsweredWhole()
    {
        // More keys than one lookup request of the HTTP protocol holds: a store may split them, the answer is whole.
        ObjectKey[] keys = [.. Enumerable.Range(0, 5000).Select(i => TestObjects.KeyFor($"many-{i}"))];
        int[] stored = [0, 1, 4500, 4999];
        foreach (int i in stored)
        {
            await Store.PutAsync(keys[i], TestObjects.Container(keys[i], 10, i), Ct);
        }

        bool[] exists = await Store.ExistsAsync(keys, Ct);

        Assert.Equal(keys.Length, exists.Length);
        Assert.Equal(stored, Enumerable.Range(0, exists.Length).Where(i => exists[i]));
        Assert.Equal(2, await Store.LongestPrefixAsync(keys, Ct));
    }

    [Theory]
    [InlineData(0, 10)]
    [InlineData(128, 1000)]
    [InlineData(3000, null)]
    [InlineData((1 << 20) - 100, (2 << 20) + 200)]
    [InlineData(4 << 20, null)]
    public async Task Get_Range_WritesExactlyThoseBytes(int offset, int? length)
    {
        ObjectKey key = TestObjects.KeyFor("ranged");
        byte[] data = TestObjects.Container(key, Large, seed: 3);
        await Store.PutAsync(key, data, Ct);
        var destination = new ArrayBufferWriter<byte>();

        StoreRead read = await Store.GetAsync(key, destination, new ByteRange(offset, length), Ct);

        int count = length ?? (data.Length - offset);
        Assert.Equal(new StoreRead(true, data.Length, count), read);
        Assert.True(destination.WrittenSpan.SequenceEqual(data.AsSpan(offset, count)));
    }

    [Fact]
    public async Task Get_EmptyRange_FoundWithLengthWritingNothing()
    {
        ObjectKey key = TestObjects.KeyFor("empty-range");
        byte[] data = TestObjects.Container(key, 4000, seed: 5);
        await Store.PutAsync(key, data, Ct);

        foreach (ByteRange range in new ByteRange[] { new(50, 0), new(data.Length, 0) })
        {
            var destination = new ArrayBufferWriter<byte>();
            Assert.Equal(new StoreRead(true, data.Length, 0), await Store.GetAsync(key, destination, range, Ct));
            Assert.Equal(0, destination.WrittenCount);
        }

        Assert.Equal(StoreRead.Miss, await Store.GetAsync(TestObjects.KeyFor("absent"), new ArrayBufferWriter<byte>(), new ByteRange(0, 0), Ct));
    }

    [Fact]
    public async Task Get_RangeOutsideObject_ArgumentOutOfRangeWritingNothing()
    {
        ObjectKey key = TestObjects.KeyFor("outside");
        byte[] data = TestObjects.Container(key, 1000, seed: 1);
        await Store.PutAsync(key, data, Ct);

        foreach (ByteRange range in new ByteRange[] { new(-1, 10), new(data.Length + 1, null), new(data.Length - 10, 11), new(0, -1) })
        {
            var destination = new ArrayBufferWriter<byte>();
            await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await Store.GetAsync(key, destination, range, Ct));
            Assert.Equal(0, destination.WrittenCount);
        }

        Assert.Equal(data, await GetBytesAsync(key));
    }

    [Fact]
    public async Task Put_NotAnIntactContainer_ArgumentExceptionNothingStored()
    {
        ObjectKey key = TestObjects.KeyFor("refused");
        byte[] valid = TestObjects.Container(key, 2000, 1);
        byte[] flipped = (byte[])valid.Clone();
        flipped[1500] ^= 0x01;
        byte[] noise = new byte[valid.Length];
        new Random(3).NextBytes(noise);

        foreach (byte[] bad in new[] { [], noise, valid[..^1], [.. valid, 0], flipped })
        {
            await Assert.ThrowsAsync<ArgumentException>(async () => await Store.PutAsync(key, bad, Ct));
        }

        Assert.Equal(new[] { false }, await Store.ExistsAsync([key], Ct));
        Assert.Null(await GetBytesAsync(key));
    }

    [Fact]
    public async Task AnyOperation_DefaultKey_ArgumentException()
    {
        ObjectKey key = default;
        byte[] valid = TestObjects.Container(TestObjects.KeyFor("valid"), 100, 1);

        await Assert.ThrowsAnyAsync<ArgumentException>(async () => await Store.PutAsync(key, valid, Ct));
        await Assert.ThrowsAnyAsync<ArgumentException>(async () => await Store.GetAsync(key, new ArrayBufferWriter<byte>(), cancellationToken: Ct));
        await Assert.ThrowsAnyAsync<ArgumentException>(async () => await Store.DeleteAsync(key, Ct));
        await Assert.ThrowsAnyAsync<ArgumentException>(async () => await Store.ExistsAsync([TestObjects.KeyFor("valid"), key], Ct));
    }

    [Fact]
    public async Task Put_LargerThanTheLimit_FullExceptionNothingStored()
    {
        const long Limit = 256 << 10;
        IKvStore? limited = await OpenLimitedAsync(Limit);
        if (limited is null)
        {
            Assert.Skip("This store has no object size limit.");
        }

        await using (limited)
        {
            ObjectKey key = TestObjects.KeyFor("too-big");
            ObjectKey fits = TestObjects.KeyFor("fits");
            byte[] small = TestObjects.Container(fits, 1000, 2);

            await Assert.ThrowsAsync<KvStoreFullException>(async () => await limited.PutAsync(key, TestObjects.Container(key, (int)Limit, 1), Ct));

            Assert.Equal(new[] { false }, await limited.ExistsAsync([key], Ct));
            await limited.PutAsync(fits, small, Ct);
            var destination = new ArrayBufferWriter<byte>();
            Assert.True((await limited.GetAsync(fits, destination, cancellationToken: Ct)).Found);
            Assert.True(destination.WrittenSpan.SequenceEqual(small));
        }
    }

    [Fact]
    public async Task Put_ConcurrentWriters_EveryObjectWholeAndOneVersionWins()
    {
        ObjectKey[] distinct = [.. Enumerable.Range(0, 16).Select(i => TestObjects.KeyFor($"parallel-{i}"))];
        ObjectKey shared = TestObjects.KeyFor("contended");
        byte[][] sharedVersions = [.. Enumerable.Range(0, 8).Select(i => TestObjects.Container(shared, 300_000 + (i * 1000), i))];

        await Task.WhenAll(
            distinct.Select(k => Store.PutAsync(k, TestObjects.Container(k, 50_000, 1), Ct).AsTask())
                .Concat(sharedVersions.Select(v => Task.Run(async () => await Store.PutAsync(shared, v, Ct), Ct))));

        foreach (ObjectKey key in distinct)
        {
            byte[]? read = await GetBytesAsync(key);
            Assert.NotNull(read);
            Assert.True(TestObjects.IsFor(read, key, out _));
        }

        byte[]? winner = await GetBytesAsync(shared);
        Assert.NotNull(winner);
        Assert.Contains(sharedVersions, v => v.AsSpan().SequenceEqual(winner));
    }

    [Fact]
    public async Task Operations_Cancelled_OperationCanceledNothingStored()
    {
        ObjectKey key = TestObjects.KeyFor("cancelled");
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await Store.PutAsync(key, TestObjects.Container(key, 100, 1), cancelled.Token));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await Store.GetAsync(key, new ArrayBufferWriter<byte>(), cancellationToken: cancelled.Token));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await Store.ExistsAsync([key], cancelled.Token));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await Store.LongestPrefixAsync([key], cancelled.Token));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await Store.DeleteAsync(key, cancelled.Token));

        Assert.Equal(new[] { false }, await Store.ExistsAsync([key], Ct));
    }

    [Fact]
    public async Task GetStats_AfterTraffic_CountsHitsMissesAndBytes()
    {
        ObjectKey key = TestObjects.KeyFor("counted");
        byte[] data = TestObjects.Container(key, 10_000, 1);
        await Store.PutAsync(key, data, Ct);
        await Store.GetAsync(key, new ArrayBufferWriter<byte>(), cancellationToken: Ct);
        await Store.GetAsync(key, new ArrayBufferWriter<byte>(), new ByteRange(0, 100), Ct);
        await Store.GetAsync(TestObjects.KeyFor("absent"), new ArrayBufferWriter<byte>(), cancellationToken: Ct);

        StoreStats stats = await Store.GetStatsAsync(Ct);

        Assert.Equal(2, stats.Hits);
        Assert.Equal(1, stats.Misses);
        Assert.Equal(data.Length, stats.BytesIn);
        Assert.Equal(data.Length + 100, stats.BytesOut);
        Assert.Equal(0, stats.CorruptObjects);
        Assert.True(stats.Objects >= 1);
        Assert.True(stats.UsedBytes >= data.Length);
    }

    /// <summary>The whole object, or null on a miss (which must write nothing).</summary>
    protected async Task<byte[]?> GetBytesAsync(ObjectKey key)
    {
        var destination = new ArrayBufferWriter<byte>();
        StoreRead read = await Store.GetAsync(key, destination, cancellationToken: Ct);
        if (!read.Found)
        {
            Assert.Equal(0, destination.WrittenCount);
            return null;
        }

        Assert.Equal(read.BytesWritten, destination.WrittenCount);
        return destination.WrittenSpan.ToArray();
    }
}
