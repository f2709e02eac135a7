using System.Buffers;
using System.Net;
using System.Net.Sockets;
using KvFetcher.Codecs;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Engine;
using KvFetcher.Fetch.Fetching;
using KvFetcher.Fetch.Restoring;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Store;
using KvFetcher.Store.Disk;
using KvFetcher.Store.Remote;
using KvFetcher.Store.Shaping;
using KvFetcher.Tests;

namespace KvFetcher.Fetch.Tests;

public sealed class KvReuseTests(ReuseFixture fixture) : IClassFixture<ReuseFixture>, IAsyncDisposable
{
    private static readonly KvVariant[] s_ladder = [KvVariant.Raw, KvVariant.Exact, KvVariant.Parse("video8"), KvVariant.Parse("cachegen0")];
    private readonly string _directory = Directory.CreateTempSubdirectory("kvf-reuse-").FullName;
    private readonly List<IKvStore> _stores = [];

    public async ValueTask DisposeAsync()
    {
        foreach (IKvStore store in _stores)
        {
            await store.DisposeAsync();
        }

        Directory.Delete(_directory, recursive: true);
    }

    [Theory]
    [InlineData("fetch-raw")]
    [InlineData("fetch-raw-seq")]
    [InlineData("fetch-exact")]
    [InlineData("cake-raw")]
    [InlineData("cake-exact")]
    [InlineData("ours")]
    [InlineData("ours-layer")]
    public async Task Prefill_LosslessStrategy_BitIdenticalToFullPrefill(string strategy)
    {
        await using KvReuse reuse = await WarmAsync(new ReuseOptions { Ladder = s_ladder, LosslessOnly = true });

        (PrefillReport report, float[] logits, byte[] kv) = await PrefillAsync(reuse, PrefillStrategy.Parse(strategy));

        Assert.Equal(4, report.StoredChunks);
        Assert.Equal(fixture.FullLogits, logits);
        Assert.Equal(fixture.FullKv, kv);
        Assert.Equal(0, report.FailedChunks);
        Assert.Equal(report.RestoredChunks * 256, report.ReusedTokens);
        if (strategy.StartsWith("fetch", StringComparison.Ordinal))
        {
            Assert.Equal(4, report.RestoredChunks);
        }

        if (strategy.StartsWith("cake", StringComparison.Ordinal))
        {
            // Cake fetches from the back while the engine computes from the front: the restored chunks are the last
            // ones, restored into the cache out of order, before the ones in front of them are computed.
            int[] restored = [.. report.Timeline.Where(s => s.Stage == PrefillStage.Restore).Select(s => s.Chunk).Order()];
            Assert.NotEmpty(restored);
            Assert.Equal(Enumerable.Range(4 - restored.Length, restored.Length), restored);
            Assert.True(report.Timeline.Where(s => s.Stage == PrefillStage.Restore).Min(s => s.Start) <
                report.Timeline.Where(s => s.Stage == PrefillStage.Compute && s.Chunk >= 0).Max(s => s.End));
        }
    }

    [Fact]
    public async Task Prefill_OursWhenFetchingIsFarFasterThanComputing_FetchesAndStaysBitIdentical()
    {
        await using KvReuse reuse = await WarmAsync(new ReuseOptions { Ladder = s_ladder, LosslessOnly = true });
        // As the rates say: a chunk arrives in 0.2 s and takes 5 s to compute. Ours must fetch, not compute everything
        // (and the engine's patience, twice the predicted arrival, outlasts a slow first fetch in a fresh process).
        reuse.Rates.SetBandwidth(reuse.Plan(fixture.Tokens).ChunkBytes / 0.2);
        for (int i = 0; i < 40; i++)
        {
            reuse.Rates.ObserveCompute(i % 4, 5.0);
        }

        (PrefillReport report, float[] logits, byte[] kv) = await PrefillAsync(reuse, PrefillStrategy.Adaptive, publish: false);

        Assert.True(report.RestoredChunks > 0, $"ours restored nothing: {report.FailedChunks} failed, {report.TakenBackChunks} taken back");
        Assert.Equal(fixture.FullLogits, logits);
        Assert.Equal(fixture.FullKv, kv);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public async Task Prefill_OursLayerWhenComputeAndFetchAreClose_SplitsAChunkByLayersAndStaysBitIdentical(int layerGroupLog2)
    {
        int group = 1 << layerGroupLog2;
        await using KvReuse reuse = await WarmAsync(new ReuseOptions { Ladder = [KvVariant.Raw], LosslessOnly = true, LayerGroup = group });
        // As the rates say: a chunk computes in 1 s and arrives raw in 2/3 s. Token-wise the best meeting point takes 2 s (one
        // chunk computed and three fetched, or two and two); split by layers it is 1.6 s, with chunk 1's lower ~60% computed.
        reuse.Rates.SetBandwidth(reuse.Plan(fixture.Tokens).ChunkBytes / (2.0 / 3));
        for (int i = 0; i < 40; i++)
        {
            reuse.Rates.ObserveCompute(i % 4, 1.0);
        }

        (PrefillReport report, float[] logits, byte[] kv) = await PrefillAsync(reuse, PrefillStrategy.LayerSplit, publish: false);

        Assert.Equal("layer-split", report.Plan);
        Assert.Equal(1, report.SplitChunk);
        int layers = fixture.Model.Config.NumLayers;
        Assert.InRange(report.SplitLayers, (layers / 2) - group, (layers * 3 / 4) + group);
        Assert.Equal(0, report.SplitLayers % group);
        Assert.Equal(3, report.RestoredChunks);
        Assert.True(report.BytesFetched < 3 * (long)reuse.Plan(fixture.Tokens).ChunkBytes, $"fetched {report.BytesFetched} bytes: the split chunk's lower layers were fetched too");
        Assert.Equal(fixture.FullLogits, logits);
        Assert.Equal(fixture.FullKv, kv);
    }

    [Fact]
    public async Task Prefill_OursLayerWithoutLayerAddressableContainers_TakesOursPlanAndStaysBitIdentical()
    {
        await using KvReuse reuse = await WarmAsync(new ReuseOptions { Ladder = [KvVariant.Raw, KvVariant.Exact], LosslessOnly = true, LayerGroup = 0 });
        // As the rates say: a chunk arrives in 0.2 s and takes 5 s to compute. Plain containers cannot be read by layer
        // ranges, so ours-layer follows ours' plan (which fetches).
        reuse.Rates.SetBandwidth(reuse.Plan(fixture.Tokens).ChunkBytes / 0.2);
        for (int i = 0; i < 40; i++)
        {
            reuse.Rates.ObserveCompute(i % 4, 5.0);
        }

        (PrefillReport report, float[] logits, byte[] kv) = await PrefillAsync(reuse, PrefillStrategy.LayerSplit, publish: false);

        Assert.Equal("ours-layer", report.Strategy);
        Assert.Equal("ours", report.Plan);
        Assert.Equal(-1, report.SplitChunk);
        Assert.True(report.RestoredChunks > 0, $"ours-layer restored nothing: {report.FailedChunks} failed, {report.TakenBackChunks} taken back");
        Assert.Equal(fixture.FullLogits, logits);
        Assert.Equal(fixture.FullKv, kv);
    }

    [Fact]
    public async Task Prefill_OursLayerWhenALossyVariantIsFarCheaper_TakesOursPlanOverTheWholeLadder()
    {
        KvVariant video = KvVariant.Parse("video8");
        await using KvReuse reuse = await WarmAsync(new ReuseOptions { Ladder = [KvVariant.Raw, video], Profile = TestProfiles.Passing(fixture.Model.Fingerprint, "video8") });
        // As the rates say: a chunk computes in 1 s, arrives raw in 2/3 s (a layer split of raw would pay: 1.6 s against
        // 2 s token-wise) and as video8 in 1/3 s (ours meets after one computed chunk, in 1 s): ours' plan, fetching video8.
        int chunkBytes = reuse.Plan(fixture.Tokens).ChunkBytes;
        reuse.Rates.SetBandwidth(chunkBytes / (2.0 / 3));
        reuse.Rates.ObserveVariant(video, containerBytes: chunkBytes / 2, chunkBytes, decodeSeconds: 0.001);
        for (int i = 0; i < 40; i++)
        {
            reuse.Rates.ObserveCompute(i % 4, 1.0);
        }

        (PrefillReport report, _, _) = await PrefillAsync(reuse, PrefillStrategy.LayerSplit, publish: false);

        Assert.Equal("ours", report.Plan);
        Assert.Equal(-1, report.SplitChunk);
        Assert.True(report.RestoredChunks > 0, $"ours-layer restored nothing: {report.FailedChunks} failed, {report.TakenBackChunks} taken back");
        Assert.Contains("video8", report.Variants.Keys); // what a layer split never fetches (later chunks follow the rates measured meanwhile)
    }

    [Fact]
    public async Task Prefill_OursLayerWithACorruptSplitChunk_ComputesItWholeAndStaysBitIdentical()
    {
        await using KvReuse reuse = await WarmAsync(new ReuseOptions { Ladder = [KvVariant.Raw], LosslessOnly = true });
        reuse.Rates.SetBandwidth(reuse.Plan(fixture.Tokens).ChunkBytes / (2.0 / 3));
        for (int i = 0; i < 40; i++)
        {
            reuse.Rates.ObserveCompute(i % 4, 1.0);
        }

        // Flip one byte in the upper layers of chunk 1 (the split chunk) on disk: its group checksum must refuse it.
        ContextPlan plan = reuse.Plan(fixture.Tokens);
        var container = new System.Buffers.ArrayBufferWriter<byte>();
        Assert.True((await reuse.Store.GetAsync(plan.ObjectKeyOf(1, KvVariant.Raw), container, cancellationToken: TestContext.Current.CancellationToken)).Found);
        byte[] bytes = container.WrittenSpan.ToArray();
        bytes[bytes.Length - 100] ^= 0x40;
        await using var tampering = new TamperingStore(reuse.Store, plan.ObjectKeyOf(1, KvVariant.Raw), bytes);
        await using var tampered = new KvReuse(fixture.Model, tampering, reuse.Options, reuse.Rates);

        (PrefillReport report, float[] logits, byte[] kv) = await PrefillAsync(tampered, PrefillStrategy.LayerSplit, publish: false);

        Assert.Equal(-1, report.SplitChunk);
        Assert.Equal(1, report.FailedChunks);
        Assert.Equal(fixture.FullLogits, logits);
        Assert.Equal(fixture.FullKv, kv);
    }

    [Fact]
    public async Task Prefill_LossyVariant_RestoresExactlyWhatTheCodecDecodes()
    {
        await using KvReuse reuse = await WarmAsync(new ReuseOptions { Ladder = s_ladder });
        KvVariant video = KvVariant.Parse("video8");

        (PrefillReport report, float[] logits, byte[] kv) = await PrefillAsync(reuse, PrefillStrategy.FetchOnly(video));

        Assert.Equal(4, report.RestoredChunks);
        Assert.Equal(new Dictionary<string, int> { ["video8"] = 4 }, report.Variants);
        ContextPlan plan = reuse.Plan(fixture.Tokens);
        for (int chunk = 0; chunk < 4; chunk++)
        {
            Assert.Equal(await DecodeStoredAsync(reuse, plan, chunk, video), Slice(kv, chunk, 1100, plan));
        }

        // The suffix is computed on top of the restored KV; the codec issue measured the effect (video 8-bit: -0.01%
        // perplexity). Here the first token agrees and the logits stay close.
        Assert.Equal(System.Numerics.Tensors.TensorPrimitives.IndexOfMax(fixture.FullLogits), report.FirstToken);
        Assert.True(logits.Zip(fixture.FullLogits).Max(p => Math.Abs(p.First - p.Second)) < 1.0f);
    }

    [Fact]
    public async Task Prefill_CorruptStoredObjects_ComputesThemAndStoresThemAgain()
    {
        await using KvReuse reuse = await WarmAsync(new ReuseOptions { Ladder = s_ladder, LosslessOnly = true });
        foreach (string file in Directory.EnumerateFiles(_directory, "*raw0*", SearchOption.AllDirectories).Take(2))
        {
            using var stream = new FileStream(file, FileMode.Open, FileAccess.ReadWrite);
            stream.Position = stream.Length / 2;
            int b = stream.ReadByte();
            stream.Position = stream.Length / 2;
            stream.WriteByte((byte)(b ^ 0x40));
        }

        (PrefillReport report, float[] logits, byte[] kv) = await PrefillAsync(reuse, PrefillStrategy.FetchOnly(KvVariant.Raw));

        Assert.Equal(fixture.FullLogits, logits);
        Assert.Equal(fixture.FullKv, kv);
        Assert.Equal(2, report.FailedChunks);
        Assert.Equal(2, report.RestoredChunks);
        await reuse.Publisher.WhenIdleAsync();
        (PrefillReport again, _, _) = await PrefillAsync(reuse, PrefillStrategy.FetchOnly(KvVariant.Raw));
        Assert.Equal(4, again.RestoredChunks);
    }

    [Fact]
    public async Task Prefill_StoreDown_ComputesEverythingWithTheSameAnswer()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop(); // nothing listens there now
        await using var store = new HttpKvStore(new HttpKvStoreOptions { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Token = "t", RequestTimeout = TimeSpan.FromSeconds(2), MaxRetries = 0 });
        await using var reuse = new KvReuse(fixture.Model, store, new ReuseOptions { Ladder = s_ladder });

        (PrefillReport report, float[] logits, byte[] kv) = await PrefillAsync(reuse, PrefillStrategy.Adaptive);

        Assert.True(report.LookupFailed);
        Assert.Equal(0, report.RestoredChunks);
        Assert.Equal(fixture.FullLogits, logits);
        Assert.Equal(fixture.FullKv, kv);
        await reuse.Publisher.WhenIdleAsync();
        Assert.True(reuse.Publisher.Failed > 0);
    }

    [Fact]
    public async Task Prefill_ServerKilledMidFetch_CompletesWithTheFullPrefillAnswer()
    {
        // Chunks live in a real `kvfetch serve` server (its own data directory), fetched over HTTP through a slow link.
        await using (KvReuse writer = await WarmAsync(new ReuseOptions { Ladder = [KvVariant.Raw] }))
        {
            await writer.Store.DisposeAsync(); // releases the directory for the server
        }

        var server = await KvFetcher.Server.StoreServer.StartAsync(new KvFetcher.Server.StoreServerOptions
        {
            DataDirectory = _directory,
            Token = "a-test-token-of-32-characters!!",
            Urls = ["http://127.0.0.1:0"],
        }, TestContext.Current.CancellationToken);
        await using var http = new HttpKvStore(new HttpKvStoreOptions { BaseAddress = server.Addresses[0], Token = "a-test-token-of-32-characters!!", RequestTimeout = TimeSpan.FromSeconds(2), MaxRetries = 1 });
        await using var slow = new ShapedKvStore(http, BandwidthSchedule.Constant(4e6), ownsInner: false);
        // A patient lookup: this is about the fetch (a first HTTP lookup on a loaded CI machine can take over the 0.5 s default).
        await using var reuse = new KvReuse(fixture.Model, slow, new ReuseOptions { Ladder = [KvVariant.Raw], TransfersInFlight = 1, LookupTimeout = TimeSpan.FromSeconds(10) });
        var session = fixture.Model.CreateSession(ReuseFixture.PromptTokens);
        var logits = new float[fixture.Model.Config.VocabSize];

        Task<PrefillReport> prefill = reuse.PrefillAsync(session, fixture.Tokens, PrefillStrategy.FetchOnly(KvVariant.Raw), logits, publish: false, TestContext.Current.CancellationToken);
        await Task.Delay(400, TestContext.Current.CancellationToken); // about one 1 MB chunk in at 4 MB/s
        await server.DisposeAsync();
        PrefillReport report = await prefill;

        Assert.Equal(4, report.StoredChunks);
        Assert.InRange(report.RestoredChunks, 0, 3);
        Assert.True(report.FailedChunks >= 1);
        Assert.Equal(fixture.FullLogits, logits);
        Assert.Equal(fixture.FullKv, ReuseFixture.Export(session));
    }

    [Fact]
    public async Task Prefill_StoreSlowerThanTheDeadline_ComputesTheLateChunks()
    {
        await using KvReuse warm = await WarmAsync(new ReuseOptions { Ladder = s_ladder });
        await using var slow = new ShapedKvStore(warm.Store, BandwidthSchedule.Constant(50_000), ownsInner: false);
        await using var reuse = new KvReuse(fixture.Model, slow, new ReuseOptions { Ladder = s_ladder, ChunkTimeout = TimeSpan.FromMilliseconds(150) });

        (PrefillReport report, float[] logits, byte[] kv) = await PrefillAsync(reuse, PrefillStrategy.FetchOnly(KvVariant.Raw), publish: false);

        // Timeouts count towards the failures-in-a-row cut-off: the fetcher stops after two in a row (plus one already
        // claimed) instead of waiting out every chunk's deadline.
        Assert.Equal(4, report.StoredChunks);
        Assert.Equal(0, report.RestoredChunks);
        Assert.InRange(report.FailedChunks, ChunkFetcher.MaxFailuresInARow, 3);
        Assert.Equal(fixture.FullLogits, logits);
        Assert.Equal(fixture.FullKv, kv);
    }

    [Fact]
    public async Task Publish_AfterPrefill_StoresEveryVariantOfEveryFullChunk()
    {
        await using KvReuse reuse = await WarmAsync(new ReuseOptions { Ladder = s_ladder });
        ContextPlan plan = reuse.Plan(fixture.Tokens);

        ObjectKey[] keys = [.. Enumerable.Range(0, plan.Keys.Length).SelectMany(c => s_ladder.Select(v => plan.ObjectKeyOf(c, v)))];
        Assert.All(await reuse.Store.ExistsAsync(keys, TestContext.Current.CancellationToken), Assert.True);
        Assert.Equal(4 * s_ladder.Length, reuse.Publisher.Published);
    }

    [Fact]
    public async Task Prefill_OtherTenant_FindsNothing()
    {
        await using KvReuse warm = await WarmAsync(new ReuseOptions { Ladder = s_ladder, TenantSalt = "tenant-a" });
        await using var other = new KvReuse(fixture.Model, warm.Store, new ReuseOptions { Ladder = s_ladder, TenantSalt = "tenant-b" });

        (PrefillReport report, float[] logits, _) = await PrefillAsync(other, PrefillStrategy.Adaptive, publish: false);

        Assert.Equal(0, report.StoredChunks);
        Assert.Equal(fixture.FullLogits, logits);
    }

    /// <summary>A disk store in this test's directory holding the prompt's chunks, stored by a computing prefill.</summary>
    [Fact]
    public async Task FetchPrefix_Ladder_EachChunkAsAStoredVariant_MissingOneFallsToTheOther()
    {
        KvVariant video = KvVariant.Parse("video8");
        // Calibrated: the model's profile shows video8 within the accuracy floor.
        await using KvReuse reuse = await WarmAsync(new ReuseOptions { Ladder = [KvVariant.Raw, video], Profile = TestProfiles.Passing(fixture.Model.Fingerprint, "video8") });
        ContextPlan plan = reuse.Plan(fixture.Tokens);
        Assert.True(await reuse.Store.DeleteAsync(plan.ObjectKeyOf(1, KvVariant.Raw), TestContext.Current.CancellationToken));
        Assert.True(await reuse.Store.DeleteAsync(plan.ObjectKeyOf(2, video), TestContext.Current.CancellationToken));
        var session = fixture.Model.CreateSession(ReuseFixture.PromptTokens);

        RestoreReport report = await reuse.FetchPrefixAsync(session, plan, [KvVariant.Raw, video], TestContext.Current.CancellationToken);

        Assert.Equal(4, report.RestoredChunks);
        Assert.Equal(0, report.FailedChunks);
        Assert.Equal(4 * 256, report.ReusedTokens);
        Assert.Equal(4, report.Variants.Values.Sum());
        string[] picked = [.. Enumerable.Range(0, 4).Select(c => report.Timeline.Single(s => s.Stage == PrefillStage.Restore && s.Chunk == c).Variant!)];
        Assert.Equal("video8", picked[1]); // raw is gone
        Assert.Equal("raw", picked[2]);    // video8 is gone

        // Every chunk holds exactly what its picked variant decodes to.
        var kv = new byte[session.Cache.GetExportByteCount(4 * 256, plan.DType)];
        session.Cache.Export(0, 4 * 256, plan.DType, kv);
        for (int chunk = 0; chunk < 4; chunk++)
        {
            Assert.Equal(await DecodeStoredAsync(reuse, plan, chunk, KvVariant.Parse(picked[chunk])), Slice(kv, chunk, 4 * 256, plan));
        }
    }

    [Fact]
    public async Task Prefill_RestorerThatFails_ChunksComputedAndAnswerUnchanged()
    {
        // A restorer whose decoder throws on one chunk and whose restore throws on another (as a GPU decoder or a
        // device copy might): both chunks are computed instead, and the result is the full prefill's.
        await using KvReuse warm = await WarmAsync(new ReuseOptions { Ladder = s_ladder, LosslessOnly = true });
        await using var reuse = new KvReuse(fixture.Model, warm.Store, warm.Options, restorer: new FailingRestorer(decodeFails: 1, restoreFails: 2));

        (PrefillReport report, float[] logits, byte[] kv) = await PrefillAsync(reuse, PrefillStrategy.FetchOnly(KvVariant.Raw), publish: false);

        Assert.Equal(4, report.StoredChunks);
        Assert.Equal(2, report.FailedChunks);
        Assert.Equal(2, report.RestoredChunks);
        Assert.Equal(fixture.FullLogits, logits);
        Assert.Equal(fixture.FullKv, kv);
    }

    [Fact]
    public async Task Publisher_SeveralWorkers_StoresEveryVariantOfEveryChunk()
    {
        var store = DiskKvStore.Open(new DiskKvStoreOptions { Directory = _directory, Fsync = false });
        _stores.Add(store);
        await using var reuse = new KvReuse(fixture.Model, store, new ReuseOptions { Ladder = s_ladder, PublishWorkers = 4 });
        ContextPlan plan = reuse.Plan(fixture.Tokens);
        byte[] full = fixture.FullKv;
        for (int chunk = 0; chunk < plan.ReusableChunks; chunk++)
        {
            Assert.True(reuse.Publisher.TryEnqueue(plan, chunk, Slice(full, chunk, ReuseFixture.PromptTokens, plan)));
        }

        await reuse.Publisher.WhenIdleAsync();

        Assert.Equal(plan.ReusableChunks * s_ladder.Length, reuse.Publisher.Published);
        Assert.Equal(0, reuse.Publisher.Failed);
        ObjectKey[] keys = [.. Enumerable.Range(0, plan.ReusableChunks).SelectMany(c => s_ladder.Select(v => plan.ObjectKeyOf(c, v)))];
        Assert.All(await store.ExistsAsync(keys, TestContext.Current.CancellationToken), Assert.True);

        // KV published from wire-layout bytes restores to exactly those bytes (raw), so a full fetch equals full prefill.
        (PrefillReport report, float[] logits, byte[] kv) = await PrefillAsync(reuse, PrefillStrategy.FetchOnly(KvVariant.Raw), publish: false);
        Assert.Equal(plan.ReusableChunks, report.RestoredChunks);
        Assert.Equal(fixture.FullLogits, logits);
        Assert.Equal(fixture.FullKv, kv);
        Assert.Throws<ArgumentException>(() => reuse.Publisher.TryEnqueue(plan, 0, new byte[plan.ChunkBytes - 1]));
    }

    private async Task<KvReuse> WarmAsync(ReuseOptions options)
    {
        var store = DiskKvStore.Open(new DiskKvStoreOptions { Directory = _directory, Fsync = false });
        _stores.Add(store);
        var reuse = new KvReuse(fixture.Model, store, options);
        (PrefillReport report, _, _) = await PrefillAsync(reuse, PrefillStrategy.Adaptive);
        Assert.Equal(0, report.StoredChunks);
        await reuse.Publisher.WhenIdleAsync();
        return reuse;
    }

    private async Task<(PrefillReport Report, float[] Logits, byte[] Kv)> PrefillAsync(KvReuse reuse, PrefillStrategy strategy, bool publish = true)
    {
        var session = fixture.Model.CreateSession(ReuseFixture.PromptTokens);
        var logits = new float[fixture.Model.Config.VocabSize];
        PrefillReport report = await reuse.PrefillAsync(session, fixture.Tokens, strategy, logits, publish, TestContext.Current.CancellationToken);
        return (report, logits, ReuseFixture.Export(session));
    }

    /// <summary>What the codec itself decodes chunk <paramref name="chunk"/>'s stored <paramref name="variant"/> to.</summary>
    private static async Task<byte[]> DecodeStoredAsync(KvReuse reuse, ContextPlan plan, int chunk, KvVariant variant)
    {
        var container = new System.Buffers.ArrayBufferWriter<byte>();
        Assert.True((await reuse.Store.GetAsync(plan.ObjectKeyOf(chunk, variant), container, cancellationToken: TestContext.Current.CancellationToken)).Found);
        var decoded = new byte[plan.ChunkBytes];
        variant.GetCodec().DecodeContainer(container.WrittenSpan, plan.Expectation(chunk), decoded);
        return decoded;
    }

    private static byte[] Slice(byte[] kv, int chunk, int tokens, ContextPlan plan)
    {
        // kv is [layer][K/V][token][channels] over all tokens; gather the chunk's tokens per (layer, kind).
        int rowBytes = plan.ChunkShape.KvHeads * plan.ChunkShape.HeadDim * 2;
        var result = new byte[plan.ChunkBytes];
        int offset = 0;
        for (int slab = 0; slab < plan.ChunkShape.Layers * 2; slab++)
        {
            int source = ((slab * tokens) + (chunk * plan.ChunkTokens)) * rowBytes;
            kv.AsSpan(source, plan.ChunkTokens * rowBytes).CopyTo(result.AsSpan(offset));
            offset += plan.ChunkTokens * rowBytes;
        }

        return result;
    }

    /// <summary>A store that serves <c>replaced</c>'s bytes for one key (ranges included), unverified: a store that lies.</summary>
    private sealed class TamperingStore(IKvStore inner, ObjectKey key, byte[] replaced) : IKvStore
    {
        public string Description => "tampering";

        public ValueTask PutAsync(ObjectKey objectKey, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default) => inner.PutAsync(objectKey, data, cancellationToken);

        public ValueTask<StoreRead> GetAsync(ObjectKey objectKey, System.Buffers.IBufferWriter<byte> destination, ByteRange range = default, CancellationToken cancellationToken = default)
        {
            if (objectKey != key)
            {
                return inner.GetAsync(objectKey, destination, range, cancellationToken);
            }

            Assert.True(range.TryResolve(replaced.Length, out long start, out long count));
            destination.Write(replaced.AsSpan((int)start, (int)count));
            return ValueTask.FromResult(new StoreRead(true, replaced.Length, count));
        }

        public ValueTask<bool[]> ExistsAsync(IReadOnlyList<ObjectKey> keys, CancellationToken cancellationToken = default) => inner.ExistsAsync(keys, cancellationToken);

        public ValueTask<int> LongestPrefixAsync(IReadOnlyList<ObjectKey> chain, CancellationToken cancellationToken = default) => inner.LongestPrefixAsync(chain, cancellationToken);

        public ValueTask<bool> DeleteAsync(ObjectKey objectKey, CancellationToken cancellationToken = default) => inner.DeleteAsync(objectKey, cancellationToken);

        public ValueTask<StoreStats> GetStatsAsync(CancellationToken cancellationToken = default) => inner.GetStatsAsync(cancellationToken);

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    /// <summary>The CPU restorer, except that chunk <c>decodeFails</c>'s decode and chunk <c>restoreFails</c>'s restore throw.</summary>
    private sealed class FailingRestorer(int decodeFails, int restoreFails) : IChunkRestorer
    {
        public string Name => "failing";

        public IRestoreSlot CreateSlot(KvShape shape, DType dtype) => new Slot(HostChunkRestorer.Instance.CreateSlot(shape, dtype), decodeFails, restoreFails * shape.Tokens);

        private sealed class Slot(IRestoreSlot inner, int decodeFails, int restoreFailsAt) : IRestoreSlot
        {
            public void Decode(ReadOnlyMemory<byte> container, in ChunkExpectation expected, KvVariant variant)
            {
                if (expected.TokenStart == decodeFails * expected.Shape.Tokens)
                {
                    throw new InvalidOperationException("decoder fault");
                }

                inner.Decode(container, expected, variant);
            }

            public void Restore(IKvCache cache, int start, int end)
            {
                if (start == restoreFailsAt)
                {
                    throw new IOException("device copy fault");
                }

                inner.Restore(cache, start, end);
            }

            public void Dispose() => inner.Dispose();
        }
    }
}
