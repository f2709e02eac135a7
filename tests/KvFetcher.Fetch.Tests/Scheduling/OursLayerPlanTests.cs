using KvFetcher.Fetch.Fetching;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Fetch.Scheduling.Strategies;
using Microsoft.Extensions.Time.Testing;

namespace KvFetcher.Fetch.Tests.Scheduling;

/// <summary>
/// ours-layer's choice between ours' plan (any allowed variant, token-wise) and a layer split (lossless, layer-addressable
/// variants), from rates set by hand: the split only where it beats ours' prediction by more than its latency.
/// </summary>
public sealed class OursLayerPlanTests
{
    private const int Chunks = 4;
    private const int ChunkTokens = 256;
    private const int ChunkBytes = 1_000_000;
    private const int Layers = 32;
    private static readonly KvVariant s_video8 = KvVariant.Parse("video8");

    /// <summary>
    /// A board of 4 chunks stored as exact and video8, and rates of an engine computing a chunk in 1 s, a link over which
    /// exact takes 2/3 s a chunk and video8 <paramref name="video8Seconds"/>, decode 1 ms.
    /// </summary>
    private static (ChunkBoard Board, FetchRates Rates) Setup(double video8Seconds, TimeProvider? time = null)
    {
        var rates = new FetchRates();
        double bandwidth = 0.85 * ChunkBytes / (2.0 / 3);
        rates.SetBandwidth(bandwidth);
        rates.ObserveVariant(KvVariant.Exact, containerBytes: 850_000, ChunkBytes, decodeSeconds: 0.001);
        rates.ObserveVariant(s_video8, containerBytes: (long)(video8Seconds * bandwidth), ChunkBytes, decodeSeconds: 0.001);
        for (int chunk = 0; chunk < Chunks; chunk++)
        {
            rates.ObserveCompute(chunk, 1.0);
        }

        return (new ChunkBoard(Chunks, [KvVariant.Exact, s_video8], [.. Enumerable.Repeat(0b11, Chunks)], time: time), rates);
    }

    private static VariantChoice Choice(FetchRates rates, bool losslessOnly = false) =>
        new(rates, ChunkBytes, new VariantChoiceOptions(0.05, losslessOnly, 1));

    private static List<(int Chunk, KvVariant Variant)> ClaimAll(ChunkStrategy strategy)
    {
        var claimed = new List<(int, KvVariant)>();
        while (strategy.TryClaim(claimed.Count, out int chunk, out KvVariant variant))
        {
            claimed.Add((chunk, variant));
        }

        return claimed;
    }

    [Fact]
    public void Predict_LossyVariantFarCheaperThanLossless_TakesOursPlanWithOursVariantChoices()
    {
        // Exact at 2/3 s a chunk would be worth a layer split (1.6 s against 2 s token-wise), but video8 at 1/3 s a chunk
        // meets the engine after one computed chunk in 1 s: ours' plan.
        (ChunkBoard board, FetchRates rates) = Setup(video8Seconds: 1.0 / 3, new FakeTimeProvider());
        VariantChoice choice = Choice(rates);

        OursLayerPlan plan = OursLayerPlan.Predict(board, rates, choice, ChunkTokens, Layers, groupLayers: 1, sharedCores: false);
        ChunkStrategy strategy = plan.CreateStrategy(board, rates, choice, ChunkTokens, sharedCores: false);

        Assert.False(plan.SplitsByLayers);
        Assert.True(plan.Split.Layers > 0, $"the lossless prediction alone should split: {plan.Split}");
        Assert.Equal(1, plan.OursVariant);
        Assert.Equal((1, 0), (plan.Ours.Chunk, plan.Ours.Layers));
        Assert.InRange(plan.Ours.PredictedSeconds, 1.0, 1.1);
        Assert.IsType<AdaptiveStrategy>(strategy);
        Assert.Equal("ours", strategy.Plan);
        Assert.Equal(0, strategy.SplitLayersOf(plan.Split.Chunk));

        // The fetch side claims exactly what ours does on the same board and rates.
        (ChunkBoard oursBoard, FetchRates oursRates) = Setup(video8Seconds: 1.0 / 3, new FakeTimeProvider());
        var ours = new AdaptiveStrategy(oursBoard, oursRates, Choice(oursRates), ChunkTokens, sharedCores: false);
        List<(int Chunk, KvVariant Variant)> claimed = ClaimAll(strategy);
        Assert.NotEmpty(claimed);
        Assert.All(claimed, c => Assert.Equal(s_video8, c.Variant));
        Assert.Equal(ClaimAll(ours), claimed);
    }

    [Fact]
    public void Predict_LossyVariantOnlySlightlyCheaper_SplitsByLayers()
    {
        // video8 at 0.6 s a chunk: token-wise at best 1.8 s, the exact layer split 1.6 s.
        (ChunkBoard board, FetchRates rates) = Setup(video8Seconds: 0.6);
        VariantChoice choice = Choice(rates);

        OursLayerPlan plan = OursLayerPlan.Predict(board, rates, choice, ChunkTokens, Layers, groupLayers: 1, sharedCores: false);
        ChunkStrategy strategy = plan.CreateStrategy(board, rates, choice, ChunkTokens, sharedCores: false);

        Assert.True(plan.SplitsByLayers, $"ours {plan.Ours}, split {plan.Split}");
        Assert.Equal(1, plan.OursVariant);
        Assert.Equal(0, plan.SplitVariant);
        Assert.Equal(1, plan.Split.Chunk);
        Assert.InRange(plan.Split.Layers, 19, 20);
        var split = Assert.IsType<LayerSplitStrategy>(strategy);
        Assert.Equal("layer-split", split.Plan);
        Assert.Equal(plan.Split, split.Split);
        Assert.Equal(plan.Split.Layers, split.SplitLayersOf(1));
        Assert.All(ClaimAll(split), c => Assert.Equal(KvVariant.Exact, c.Variant));
    }

    [Fact]
    public void Predict_LossyVariantNotAllowed_SplitsByLayers()
    {
        // The same cheap video8 as above, but the request may fetch lossless variants only: ours' plan is exact's, and the
        // split beats it.
        (ChunkBoard board, FetchRates rates) = Setup(video8Seconds: 1.0 / 3);
        VariantChoice choice = Choice(rates, losslessOnly: true);

        OursLayerPlan plan = OursLayerPlan.Predict(board, rates, choice, ChunkTokens, Layers, groupLayers: 1, sharedCores: false);

        Assert.True(plan.SplitsByLayers, $"ours {plan.Ours}, split {plan.Split}");
        Assert.Equal(0, plan.OursVariant);
        Assert.InRange(plan.Ours.PredictedSeconds, 2.0, 2.1);
        Assert.IsType<LayerSplitStrategy>(plan.CreateStrategy(board, rates, choice, ChunkTokens, sharedCores: false));
    }

    [Fact]
    public void Predict_NoLayerGroups_TakesOursPlan()
    {
        // Layer ranges cannot be read (e.g. authenticated containers): no split, so ours' plan even where one would pay.
        (ChunkBoard board, FetchRates rates) = Setup(video8Seconds: 0.6);
        VariantChoice choice = Choice(rates);

        OursLayerPlan plan = OursLayerPlan.Predict(board, rates, choice, ChunkTokens, Layers, groupLayers: 0, sharedCores: false);

        Assert.False(plan.SplitsByLayers);
        Assert.IsType<AdaptiveStrategy>(plan.CreateStrategy(board, rates, choice, ChunkTokens, sharedCores: false));
    }

    [Fact]
    public void Predict_NoLosslessLayerAddressableVariantStored_TakesOursPlan()
    {
        var rates = new FetchRates();
        rates.SetBandwidth(1e6);
        var board = new ChunkBoard(Chunks, [KvVariant.Exact, s_video8], [.. Enumerable.Repeat(0b10, Chunks)]);
        VariantChoice choice = Choice(rates);

        OursLayerPlan plan = OursLayerPlan.Predict(board, rates, choice, ChunkTokens, Layers, groupLayers: 1, sharedCores: false);

        Assert.Equal(-1, plan.SplitVariant);
        Assert.Equal(1, plan.OursVariant);
        Assert.False(plan.SplitsByLayers);
    }

    [Fact]
    public void Pipeline_EligibleFilter_RuleAmongTheEligibleOnly()
    {
        (ChunkBoard board, FetchRates rates) = Setup(video8Seconds: 1.0 / 3);
        VariantChoice choice = Choice(rates);

        (int any, double anyCost, _) = choice.Pipeline(board, engineBusy: false);
        (int lossless, double losslessCost, double latency) = choice.Pipeline(board, engineBusy: false, OursLayerPlan.IsLayerAddressableLossless);

        Assert.Equal(1, any);
        Assert.Equal(1.0 / 3, anyCost, 3);
        Assert.Equal(0, lossless);
        Assert.Equal(2.0 / 3, losslessCost, 9);
        Assert.Equal(0.001 + 0.002, latency, 9);
    }
}
