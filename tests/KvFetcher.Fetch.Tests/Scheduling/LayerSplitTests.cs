using KvFetcher.Fetch.Scheduling.Strategies;

namespace KvFetcher.Fetch.Tests.Scheduling;

/// <summary>
/// ours-layer's meeting point in the fluid model: a layer split only where it beats every token-wise meeting point, at
/// the harmonic optimum N·C·F / (C + F) when layers are fine-grained enough.
/// </summary>
public class LayerSplitTests
{
    [Fact]
    public void Best_ComputeAndFetchClose_SplitsTheMeetingChunkAtTheHarmonicOptimum()
    {
        // 4 chunks, C = 1 s, F = 2/3 s: token-wise 2 s at best; the harmonic optimum is 4·(2/3)/(5/3) = 1.6 s with chunk 1's
        // lower 60% computed.
        LayerSplit split = LayerSplit.Best(4, 32, 1, _ => 1.0, 2.0 / 3, latency: 0);

        Assert.Equal(1, split.Chunk);
        Assert.InRange(split.Layers, 19, 20);
        Assert.InRange(split.PredictedSeconds, 1.6, 1.6 + (1.0 / 32));
    }

    [Fact]
    public void Best_HarmonicMeetingOnAChunkBoundary_NoLayerSplit()
    {
        LayerSplit split = LayerSplit.Best(4, 32, 1, _ => 1.0, 1.0, latency: 0);

        Assert.Equal(2, split.Chunk);
        Assert.Equal(0, split.Layers);
        Assert.Equal(2.0, split.PredictedSeconds, 9);
    }

    [Theory]
    [InlineData(4, 1.0, 0.05)]
    [InlineData(4, 0.05, 1.0)]
    [InlineData(8, 0.115, 0.084)]
    [InlineData(16, 0.0086, 0.067)]
    [InlineData(3, 0.3, 0.2)]
    public void Best_AnyRates_NoWorseThanTokenWiseAndWithinOneLayerOfTheHarmonicOptimum(int chunks, double compute, double fetch)
    {
        const int Layers = 32;
        LayerSplit split = LayerSplit.Best(chunks, Layers, 1, _ => compute, fetch, latency: 0);

        double tokenWise = Enumerable.Range(0, chunks + 1).Min(m => Math.Max(m * compute, (chunks - m) * fetch));
        double harmonic = chunks * compute * fetch / (compute + fetch);
        Assert.True(split.PredictedSeconds <= tokenWise + 1e-12, $"{split} is worse than token-wise {tokenWise}");
        Assert.InRange(split.PredictedSeconds, harmonic - 1e-12, harmonic + (Math.Max(compute, fetch) / Layers));
    }

    [Fact]
    public void Best_NoLayerGroups_TokenWiseOnly()
    {
        LayerSplit split = LayerSplit.Best(4, 32, 0, _ => 1.0, 2.0 / 3, latency: 0);

        Assert.Equal(0, split.Layers);
        Assert.Equal(2.0, split.PredictedSeconds, 9);
    }

    [Fact]
    public void Best_GroupsOfFourLayers_SplitOnAGroupBoundary()
    {
        LayerSplit split = LayerSplit.Best(4, 32, 4, _ => 1.0, 2.0 / 3, latency: 0);

        Assert.Equal(1, split.Chunk);
        Assert.Equal(20, split.Layers);
    }

    [Fact]
    public void Best_EngineSharingCoresWithAFastFetch_FetchesEverything()
    {
        // The CPU at 16 Gbit/s: 8 chunks of 125 ms compute, fetched at 15 ms each, of which 12 ms are decode and restore on
        // the engine's cores. With independent sides the engine would compute chunk 0 beside the fetch (0.125 s against
        // 0.132 s; the best layer split, 0.118 s, gains less than a split chunk's own stages); charged the fetcher's work,
        // computing anything beside the fetch costs more than it saves, and everything is fetched.
        LayerSplit independent = LayerSplit.Best(8, 32, 1, _ => 0.125, 0.015, latency: 0.012);
        LayerSplit shared = LayerSplit.Best(8, 32, 1, _ => 0.125, 0.015, latency: 0.012, hostWork: 0.012);

        Assert.Equal((1, 0), (independent.Chunk, independent.Layers));
        Assert.Equal((0, 0), (shared.Chunk, shared.Layers));
        Assert.Equal((8 * 0.015) + 0.012, shared.PredictedSeconds, 9);
    }

    [Fact]
    public void Best_EngineSharingCoresWithASlowLink_StillSplits()
    {
        // 100 Mbit/s: the link, not the cores, bounds the fetch, so the split still pays with the host work charged.
        LayerSplit shared = LayerSplit.Best(4, 32, 1, _ => 0.56, 0.142, latency: 0.025, hostWork: 0.025);

        Assert.True(shared.Layers > 0);
        Assert.True(shared.PredictedSeconds < Enumerable.Range(0, 5).Min(m => Math.Max(m == 0 ? 0 : (m * 0.56) + ((4 - m) * 0.025), (4 - m) == 0 ? 0 : ((4 - m) * 0.142) + 0.025)));
    }

    [Fact]
    public void Best_PipelineLatency_MovesTheSplitTowardsTheEngine()
    {
        LayerSplit without = LayerSplit.Best(4, 32, 1, _ => 1.0, 2.0 / 3, latency: 0);
        LayerSplit with = LayerSplit.Best(4, 32, 1, _ => 1.0, 2.0 / 3, latency: 0.2);

        Assert.True((with.Chunk * 32) + with.Layers > (without.Chunk * 32) + without.Layers);
        Assert.True(with.PredictedSeconds > without.PredictedSeconds);
    }
}
