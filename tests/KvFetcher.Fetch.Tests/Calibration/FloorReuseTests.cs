using KvFetcher.Codecs.Transform;
using KvFetcher.Core;
using KvFetcher.Core.Numerics;
using KvFetcher.Core.Keys;
using KvFetcher.Engine;
using KvFetcher.Fetch.Calibration;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Store;
using KvFetcher.Store.Disk;
using KvFetcher.Tests;

namespace KvFetcher.Fetch.Tests.Calibration;

/// <summary>
/// The accuracy floor in reuse: ours and the server's fetch path take lossy variants only where the model's own
/// calibration profile shows they pass it; a missing or stale profile leaves the lossless ladder.
/// </summary>
public sealed class FloorReuseTests(ReuseFixture fixture) : IClassFixture<ReuseFixture>, IAsyncDisposable
{
    private static readonly KvVariant s_video4 = KvVariant.Parse("video4");
    private static readonly KvVariant s_cachegen = KvVariant.Parse("cachegen0");
    private readonly string _directory = Directory.CreateTempSubdirectory("kvf-floor-").FullName;
    private readonly List<IKvStore> _stores = [];

    public async ValueTask DisposeAsync()
    {
        foreach (IKvStore store in _stores)
        {
            await store.DisposeAsync();
        }

        Directory.Delete(_directory, recursive: true);
    }

    [Fact]
    public async Task New_ModelWithoutOrWithStaleProfile_FallsBackToTheLosslessLadder()
    {
        // A copy of a tiny model in its own directory: its profile is whatever this test writes there.
        string modelDirectory = CopyTinyModel();
        using LanguageModel model = LanguageModel.Open(modelDirectory, new LanguageModelOptions { KvStorageDType = DType.Float16, Threads = 1 });
        DiskKvStore store = OpenStore("tiny");
        KvVariant[] ladder = [KvVariant.Raw, KvVariant.Exact, s_cachegen];

        await using (var missing = new KvReuse(model, store, new ReuseOptions { Ladder = ladder }))
        {
            Assert.Equal([KvVariant.Raw, KvVariant.Exact], missing.FetchLadder);
            Assert.Contains("missing", missing.Floor.ProfileStatus, StringComparison.Ordinal);
        }

        TestProfiles.Passing(new ModelFingerprint(new Hash256(1, 1, 1, 1)), "cachegen0").Save(CalibrationProfile.PathIn(modelDirectory));
        await using (var stale = new KvReuse(model, store, new ReuseOptions { Ladder = ladder }))
        {
            Assert.Equal([KvVariant.Raw, KvVariant.Exact], stale.FetchLadder);
            Assert.Contains("stale", stale.Floor.ProfileStatus, StringComparison.Ordinal);
        }

        // Calibrated for this very model: the lossy variant passes (the control that shows the two above could fail).
        TestProfiles.Passing(model.Fingerprint, "cachegen0").Save(CalibrationProfile.PathIn(modelDirectory));
        await using (var calibrated = new KvReuse(model, store, new ReuseOptions { Ladder = ladder }))
        {
            Assert.Equal(ladder, calibrated.FetchLadder);
            Assert.True(calibrated.Floor.ProfileTrusted);
        }

        await using var lossless = new KvReuse(model, store, new ReuseOptions { Ladder = ladder, Floor = AccuracyFloor.Lossless });
        Assert.Equal([KvVariant.Raw, KvVariant.Exact], lossless.FetchLadder);
    }

    [Fact]
    public async Task New_KvtcTransformOfAnotherModel_NotLoadedAndKvtcNotFetched()
    {
        string modelDirectory = CopyTinyModel();
        using LanguageModel model = LanguageModel.Open(modelDirectory, new LanguageModelOptions { KvStorageDType = DType.Float16, Threads = 1 });
        DiskKvStore store = OpenStore("kvtc");
        KvVariant kvtc = KvVariant.Parse("kvtc1");
        KvVariant[] ladder = [KvVariant.Raw, kvtc];
        TestProfiles.Passing(model.Fingerprint, "kvtc1").Save(CalibrationProfile.PathIn(modelDirectory));

        KvtcTransform stale = FitRandom(model, new ModelFingerprint(new Hash256(7, 7, 7, 7)));
        stale.Save(KvtcTransform.PathIn(modelDirectory));
        await using (var reuse = new KvReuse(model, store, new ReuseOptions { Ladder = ladder }))
        {
            Assert.Null(KvtcTransforms.Find(stale.Id));
        }

        // Fitted to this very model: loaded, and kvtc1 passes the floor with the profile (the control).
        KvtcTransform current = FitRandom(model, model.Fingerprint);
        current.Save(KvtcTransform.PathIn(modelDirectory));
        await using (var reuse = new KvReuse(model, store, new ReuseOptions { Ladder = ladder }))
        {
            Assert.NotNull(KvtcTransforms.Find(current.Id));
            Assert.Equal(ladder, reuse.FetchLadder);
        }
    }

    /// <summary>A transform for <paramref name="model"/>'s dimensions fitted to random KV, bound to <paramref name="fingerprint"/>.</summary>
    private static KvtcTransform FitRandom(LanguageModel model, ModelFingerprint fingerprint)
    {
        var shape = new KvShape(model.Config.NumLayers, 16, model.Config.NumKvHeads, model.Config.HeadDim);
        var random = new Random(fingerprint.GetHashCode());
        float[] values = [.. Enumerable.Range(0, (int)shape.Elements).Select(_ => (float)random.NextDouble())];
        var kv = new byte[shape.Elements * 2];
        FloatConversions.FromSingle(DType.Float16, values, kv);
        var fitter = new KvtcFitter(shape.Layers, shape.KvHeads, shape.HeadDim, TransformCalibration.KeyRotationOf(model.Config));
        fitter.Add(kv, shape, DType.Float16, tokenStart: 0);
        return fitter.Build(fingerprint);
    }

    [Theory]
    [InlineData(0.90, false)]
    [InlineData(1.00, true)]
    public async Task PrefillOurs_LossyVariantFastest_FetchedOnlyWithinTheFloor(double top1, bool allowed)
    {
        DiskKvStore store = OpenStore("ours");
        await WarmAsync(store, [KvVariant.Raw, s_video4]);
        var options = new ReuseOptions { Ladder = [KvVariant.Raw, s_video4], Profile = TestProfiles.Of(fixture.Model.Fingerprint, ("video4", top1, 0.0)) };
        await using var reuse = new KvReuse(fixture.Model, store, options);

        // As the rates say: computing a chunk takes 5 s, raw arrives in 1 s and video4 (4x smaller) in a quarter of that.
        ContextPlan plan = reuse.Plan(fixture.Tokens);
        reuse.Rates.SetBandwidth(plan.ChunkBytes / 1.0);
        for (int i = 0; i < 40; i++)
        {
            reuse.Rates.ObserveCompute(i % 4, 5.0);
        }

        var session = fixture.Model.CreateSession(ReuseFixture.PromptTokens);
        var logits = new float[fixture.Model.Config.VocabSize];
        PrefillReport report = await reuse.PrefillAsync(session, fixture.Tokens, PrefillStrategy.Adaptive, logits, publish: false, TestContext.Current.CancellationToken);

        Assert.True(report.RestoredChunks > 0, $"ours restored nothing: {report.FailedChunks} failed, {report.TakenBackChunks} taken back");
        Assert.Equal(allowed, report.Variants.ContainsKey("video4"));
        if (!allowed)
        {
            Assert.Equal(fixture.FullLogits, logits); // lossless only: bit-identical to a full prefill
        }
    }

    [Fact]
    public async Task FetchPrefixLadder_OnlyTheRefusedVariantStored_NothingFetched()
    {
        DiskKvStore store = OpenStore("serving");
        await WarmAsync(store, [KvVariant.Raw, s_video4]);
        await using var reuse = new KvReuse(fixture.Model, store, new ReuseOptions { Ladder = [KvVariant.Raw, s_video4], Profile = TestProfiles.Of(fixture.Model.Fingerprint, ("video4", 0.5, 0.3)) });
        ContextPlan plan = reuse.Plan(fixture.Tokens);
        Assert.True(await store.DeleteAsync(plan.ObjectKeyOf(1, KvVariant.Raw), TestContext.Current.CancellationToken));

        RestoreReport report = await reuse.FetchPrefixAsync(fixture.Model.CreateSession(ReuseFixture.PromptTokens), plan, [KvVariant.Raw, s_video4], TestContext.Current.CancellationToken);

        // Chunk 1 is stored only as video4, which the floor refuses: the prefix ends there.
        Assert.Equal(256, report.ReusedTokens);
        Assert.Equal(new Dictionary<string, int> { ["raw"] = 1 }, report.Variants);
    }

    private DiskKvStore OpenStore(string name)
    {
        var store = DiskKvStore.Open(new DiskKvStoreOptions { Directory = Path.Combine(_directory, name), Fsync = false });
        _stores.Add(store);
        return store;
    }

    /// <summary>Stores every chunk of the fixture's prompt as each of <paramref name="ladder"/>'s variants.</summary>
    private async Task WarmAsync(IKvStore store, KvVariant[] ladder)
    {
        await using var reuse = new KvReuse(fixture.Model, store, new ReuseOptions { Ladder = ladder });
        PrefillReport report = await reuse.PrefillAsync(fixture.Model.CreateSession(ReuseFixture.PromptTokens), fixture.Tokens, PrefillStrategy.ComputeOnly,
            new float[fixture.Model.Config.VocabSize], publish: true, TestContext.Current.CancellationToken);
        Assert.Equal(0, report.StoredChunks);
        await reuse.Publisher.WhenIdleAsync();
        Assert.Equal(4 * ladder.Length, reuse.Publisher.Published);
    }

    private string CopyTinyModel()
    {
        string source = Path.Combine(Repository.Root, "tests", "TestData", "models", "tiny-llama3-rope");
        string target = Path.Combine(_directory, "model");
        Directory.CreateDirectory(target);
        foreach (string file in Directory.GetFiles(source))
        {
            if (Path.GetFileName(file) != CalibrationProfile.FileName)
            {
                File.Copy(file, Path.Combine(target, Path.GetFileName(file)));
            }
        }

        return target;
    }
}
