using KvFetcher.Fetch.Fetching;

namespace KvFetcher.Fetch.Tests.Fetching;

/// <summary>The rates the predictions come from: priors until measured, then half-and-half moving averages.</summary>
public sealed class FetchRatesTests
{
    private const int ChunkBytes = 1_000_000;

    [Fact]
    public void ObserveTransfer_FirstMeasurement_ReplacesThePrior()
    {
        var rates = new FetchRates();

        rates.ObserveTransfer(1_000_000, 0.5, concurrent: 2);

        Assert.Equal(4e6, rates.BandwidthBytesPerSecond, 6);
    }

    [Fact]
    public void ObserveTransfer_SecondMeasurement_AveragedHalfAndHalf()
    {
        var rates = new FetchRates();
        rates.ObserveTransfer(1_000_000, 1, concurrent: 1);

        rates.ObserveTransfer(3_000_000, 1, concurrent: 1);

        Assert.Equal(2e6, rates.BandwidthBytesPerSecond, 6);
    }

    [Fact]
    public void ObserveStall_WaitedLongerThanPredicted_BandwidthDropsInProportion()
    {
        var rates = new FetchRates();
        rates.SetBandwidth(8e6);

        rates.ObserveStall(predictedSeconds: 0.1, waitedSeconds: 0.4);

        Assert.Equal(2e6, rates.BandwidthBytesPerSecond, 6);
    }

    [Fact]
    public void ObserveStall_WaitedLessThanPredicted_Ignored()
    {
        var rates = new FetchRates();
        rates.SetBandwidth(8e6);

        rates.ObserveStall(predictedSeconds: 0.4, waitedSeconds: 0.1);

        Assert.Equal(8e6, rates.BandwidthBytesPerSecond, 6);
    }

    [Fact]
    public void ComputeSeconds_NothingMeasuredBefore_ThePriorOfHalfAMillisecondPerToken()
    {
        var rates = new FetchRates();
        rates.ObserveCompute(3, 1.0);

        Assert.Equal(0.128, rates.ComputeSeconds(1, 256), 9);
    }

    [Fact]
    public void ComputeSeconds_LaterChunkUnmeasured_NearestEarlierOneScaledByPosition()
    {
        var rates = new FetchRates();
        rates.ObserveCompute(2, 0.1);

        Assert.Equal(0.1, rates.ComputeSeconds(2, 256), 9);
        Assert.Equal(0.1 * 1.06, rates.ComputeSeconds(5, 256), 9);
    }

    [Fact]
    public void ComputeSeconds_MeasuredTwice_AveragedHalfAndHalf()
    {
        var rates = new FetchRates();
        rates.ObserveCompute(0, 0.1);
        rates.ObserveCompute(0, 0.3);

        Assert.Equal(0.2, rates.ComputeSeconds(0, 256), 9);
    }

    [Fact]
    public void ChunkSeconds_MeasuredVariant_TransferIsItsSizeOverTheBandwidth()
    {
        var rates = new FetchRates();
        rates.SetBandwidth(10e6);
        KvVariant video = KvVariant.Parse("video8");

        rates.ObserveVariant(video, containerBytes: 250_000, ChunkBytes, decodeSeconds: 0.03);
        (double transfer, double decode, _) = rates.ChunkSeconds(video, ChunkBytes);

        Assert.Equal(0.025, transfer, 9);
        Assert.Equal(0.03, decode, 9);
    }

    [Fact]
    public void ChunkSeconds_EngineBusyNotMeasured_IdleTimesOneAndAHalf()
    {
        var rates = new FetchRates();
        rates.ObserveVariant(KvVariant.Exact, containerBytes: 800_000, ChunkBytes, decodeSeconds: 0.02);
        rates.ObserveRestore(0.004);

        (_, double decode, double restore) = rates.ChunkSeconds(KvVariant.Exact, ChunkBytes, engineBusy: true);

        Assert.Equal(0.03, decode, 9);
        Assert.Equal(0.0045, restore, 9); // the idle restore average (0.002 prior, 0.004 measured) x 1.5
    }

    [Fact]
    public void ChunkSeconds_EngineBusyMeasured_KeptApartFromIdle()
    {
        var rates = new FetchRates();
        rates.ObserveVariant(KvVariant.Exact, containerBytes: 800_000, ChunkBytes, decodeSeconds: 0.02);
        rates.ObserveVariant(KvVariant.Exact, containerBytes: 800_000, ChunkBytes, decodeSeconds: 0.05, engineBusy: true);

        Assert.Equal(0.02, rates.ChunkSeconds(KvVariant.Exact, ChunkBytes).Decode, 9);
        Assert.Equal(0.05, rates.ChunkSeconds(KvVariant.Exact, ChunkBytes, engineBusy: true).Decode, 9);
    }
}
