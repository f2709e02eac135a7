using KvFetcher.Fetch.Fetching;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Fetch.Scheduling.Strategies;

namespace KvFetcher.Fetch.Tests.Scheduling;

/// <summary>The one variant-choice rule and cost formula every strategy uses.</summary>
public sealed class VariantChoiceTests
{
    private const int ChunkBytes = 1_000_000;
    private static readonly KvVariant s_video8 = KvVariant.Parse("video8");
    private static readonly KvVariant s_video4 = KvVariant.Parse("video4");

    private static VariantChoice Choice(FetchRates? rates = null, double slack = 0.05, bool losslessOnly = false, int decodeWorkers = 1) =>
        new(rates ?? new FetchRates(), ChunkBytes, new VariantChoiceOptions(slack, losslessOnly, decodeWorkers));

    [Fact]
    public void MostAccurateWithinSlack_MoreAccurateOneWithinTheSlack_PicksIt()
    {
        int best = Choice().MostAccurateWithinSlack([s_video4, s_video8, KvVariant.Raw], [1.0, 1.02, 1.04]);

        Assert.Equal(2, best); // raw is lossless: the most accurate, and 4% slower
    }

    [Fact]
    public void MostAccurateWithinSlack_MoreAccurateOnesBeyondTheSlack_PicksTheFastest()
    {
        int best = Choice().MostAccurateWithinSlack([s_video4, s_video8, KvVariant.Raw], [1.0, 1.2, 2.0]);

        Assert.Equal(0, best);
    }

    [Fact]
    public void MostAccurateWithinSlack_EquallyAccurate_TheLowerScoreWins()
    {
        int best = Choice().MostAccurateWithinSlack([KvVariant.Raw, KvVariant.Exact], [1.03, 1.0]);

        Assert.Equal(1, best);
    }

    [Fact]
    public void MostAccurateWithinSlack_NoneMayBeFetched_MinusOne()
    {
        int best = Choice().MostAccurateWithinSlack([KvVariant.Raw, s_video8], [double.NaN, double.NaN]);

        Assert.Equal(-1, best);
    }

    [Fact]
    public void Cost_DecodeSpreadOverWorkers_TheSlowestStageSetsThePace()
    {
        var rates = new FetchRates();
        rates.SetBandwidth(100e6);
        rates.ObserveVariant(s_video8, containerBytes: 500_000, ChunkBytes, decodeSeconds: 0.04);

        (double oneWorker, double decode, _) = Choice(rates).Cost(s_video8, engineBusy: false);
        (double sixteenWorkers, _, _) = Choice(rates, decodeWorkers: 16).Cost(s_video8, engineBusy: false);

        Assert.Equal(0.04, oneWorker, 9);  // decode, the slowest
        Assert.Equal(0.005, sixteenWorkers, 9); // transfer of 0.5 MB at 100 MB/s, once decode is spread over 16
        Assert.Equal(0.04, decode, 9);
    }

    [Fact]
    public void Fastest_LosslessOnly_NeverALossyVariantEvenIfFaster()
    {
        var rates = new FetchRates();
        rates.SetBandwidth(1e6); // slow: the small lossy variant is far faster
        var board = new ChunkBoard(1, [s_video4, KvVariant.Raw], [0b11]);

        Assert.Equal(0, Choice(rates).Fastest(board, 0));
        Assert.Equal(1, Choice(rates, losslessOnly: true).Fastest(board, 0));
    }

    [Fact]
    public void Fastest_OnlyOneVariantStored_ThatOne()
    {
        var board = new ChunkBoard(1, [KvVariant.Raw, s_video8], [0b10]);

        Assert.Equal(1, Choice().Fastest(board, 0));
    }
}
