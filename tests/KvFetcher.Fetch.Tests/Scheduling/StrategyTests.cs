using KvFetcher.Fetch.Fetching;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Fetch.Scheduling.Strategies;
using Microsoft.Extensions.Time.Testing;

namespace KvFetcher.Fetch.Tests.Scheduling;

/// <summary>
/// Each strategy's two sides on a board with rates set by hand and a fake clock: which chunks the fetcher claims, and
/// what the engine does about the chunk in front of it. No model, no store, no wall clock.
/// </summary>
public sealed class StrategyTests
{
    private const int Chunks = 8;
    private const int ChunkTokens = 256;
    private const int ChunkBytes = 1_000_000;

    private static ChunkBoard Board(TimeProvider? time = null, params int[] available) =>
        new(available.Length == 0 ? Chunks : available.Length, [KvVariant.Raw], available.Length == 0 ? [.. Enumerable.Repeat(1, Chunks)] : available, time);

    /// <summary>Rates of an engine that computes a chunk in 50 ms, and a link of <paramref name="bytesPerSecond"/>.</summary>
    private static FetchRates Rates(double bytesPerSecond)
    {
        var rates = new FetchRates();
        rates.SetBandwidth(bytesPerSecond);
        for (int chunk = 0; chunk < Chunks; chunk++)
        {
            rates.ObserveCompute(chunk, 0.05);
        }

        return rates;
    }

    private static AdaptiveStrategy Ours(ChunkBoard board, FetchRates rates) =>
        new(board, rates, new VariantChoice(rates, ChunkBytes, new VariantChoiceOptions(0.05, false, 1)), ChunkTokens, sharedCores: false);

    private static List<int> ClaimAll(ChunkStrategy strategy)
    {
        var claimed = new List<int>();
        while (strategy.TryClaim(claimed.Count, out int chunk, out KvVariant variant))
        {
            Assert.Equal(KvVariant.Raw, variant);
            Assert.Equal(ChunkState.Fetching, strategy.Board.StateOf(chunk));
            claimed.Add(chunk);
        }

        return claimed;
    }

    [Fact]
    public void FetchOnly_TryClaim_FrontToBackAndAChunkNotStoredIsFailed()
    {
        ChunkBoard board = Board(null, 1, 0, 1, 1);
        var strategy = new FetchOnlyStrategy(board);

        List<int> claimed = ClaimAll(strategy);

        Assert.Equal([0, 2, 3], claimed);
        Assert.Equal(ChunkState.Failed, board.StateOf(1));
    }

    [Fact]
    public void FetchOnly_Decide_WaitsForTheFetcherAndComputesOnlyWhatItCannotDeliver()
    {
        ChunkBoard board = Board();
        var strategy = new FetchOnlyStrategy(board);

        Assert.Equal(EngineMove.Wait, strategy.Decide(0, ChunkState.Pending, new FetchProgress(0, 0, Ended: false), out TimeSpan recheck));
        Assert.Equal(Timeout.InfiniteTimeSpan, recheck);
        Assert.Equal(EngineMove.Wait, strategy.Decide(0, ChunkState.Fetching, new FetchProgress(1, 0, Ended: false), out _));
        Assert.Equal(EngineMove.Wait, strategy.Decide(0, ChunkState.Restoring, new FetchProgress(1, 0, Ended: false), out _));
        Assert.Equal(EngineMove.Compute, strategy.Decide(0, ChunkState.Failed, new FetchProgress(0, 0, Ended: false), out _));
        Assert.Equal(EngineMove.Compute, strategy.Decide(0, ChunkState.Pending, new FetchProgress(0, 0, Ended: true), out _));
    }

    [Fact]
    public void Cake_TryClaim_BackToFrontUntilItMeetsTheEngine()
    {
        ChunkBoard board = Board();
        var strategy = new CakeStrategy(board);
        board.SetComputeFrontier(3);

        List<int> claimed = ClaimAll(strategy);

        Assert.Equal([7, 6, 5, 4], claimed);
        Assert.True(strategy.IsStopped);
    }

    [Fact]
    public void Cake_Decide_ComputesItsNextChunkEvenWhileItIsBeingFetched()
    {
        var strategy = new CakeStrategy(Board());

        Assert.Equal(EngineMove.Compute, strategy.Decide(4, ChunkState.Pending, new FetchProgress(0, 0, false), out _));
        Assert.Equal(EngineMove.Compute, strategy.Decide(4, ChunkState.Fetching, new FetchProgress(2, 0, false), out _));
        Assert.Equal(EngineMove.Wait, strategy.Decide(4, ChunkState.Restoring, new FetchProgress(2, 0, false), out _));
    }

    [Fact]
    public void Ours_FastLink_EngineWaitsAndTheFetcherTakesEveryChunk()
    {
        ChunkBoard board = Board(new FakeTimeProvider());
        AdaptiveStrategy ours = Ours(board, Rates(10e9));

        List<int> claimed = ClaimAll(ours);

        // A chunk arrives in a few ms and takes 50 ms to compute: fetching everything is the plan.
        Assert.Equal([7, 6, 5, 4, 3, 2, 1, 0], claimed);
        Assert.Equal(0, ours.EngineWaitingFor);
        Assert.Equal(EngineMove.Wait, ours.Decide(0, ChunkState.Fetching, new FetchProgress(8, 0, false), out TimeSpan recheck));
        Assert.True(recheck > TimeSpan.Zero);
    }

    [Fact]
    public void Ours_FastLinkEngineAlreadyMidway_FetchesTheBackHalf()
    {
        var time = new FakeTimeProvider();
        ChunkBoard board = Board(time);
        AdaptiveStrategy ours = Ours(board, Rates(1e9));

        // The engine was not waiting for chunk 0 after all and has computed up to chunk 4 (as after a take-back, a
        // decision to compute): the fetcher still takes what arrives before the engine gets there.
        ours.TookBack(0, restored: 0);
        board.SetComputeFrontier(4);
        List<int> claimed = ClaimAll(ours);

        Assert.NotEmpty(claimed);
        Assert.All(claimed, chunk => Assert.True(chunk > 4));
    }

    [Fact]
    public void Ours_SlowLink_EngineComputesAndTheFetcherTakesNothing()
    {
        ChunkBoard board = Board(new FakeTimeProvider());
        AdaptiveStrategy ours = Ours(board, Rates(1e5)); // 10 s a chunk

        Assert.Equal(EngineMove.Compute, ours.Decide(0, ChunkState.Pending, new FetchProgress(0, 0, false), out _));
        Assert.Empty(ClaimAll(ours));
        Assert.True(ours.IsStopped);
    }

    [Fact]
    public void Ours_FetcherLateBeyondItsPatience_EngineTakesTheRestBack()
    {
        var time = new FakeTimeProvider();
        ChunkBoard board = Board(time);
        FetchRates rates = Rates(10e9);
        AdaptiveStrategy ours = Ours(board, rates);
        ClaimAll(ours);

        Assert.Equal(EngineMove.Wait, ours.Decide(0, ChunkState.Fetching, new FetchProgress(8, 0, false), out TimeSpan patience));
        Assert.True(patience <= TimeSpan.FromSeconds(0.05)); // never longer than computing the chunk
        time.Advance(patience);

        Assert.Equal(EngineMove.TakeBackRest, ours.Decide(0, ChunkState.Fetching, new FetchProgress(8, 0, false), out _));
        ours.TookBack(0, restored: 0);
        Assert.True(rates.BandwidthBytesPerSecond < 10e9); // the wait showed the link is slower than believed
        Assert.Equal(-1, ours.EngineWaitingFor);
    }

    [Fact]
    public void Ours_FetcherRestoresWhileTheEngineWaits_PatienceStartsAgain()
    {
        var time = new FakeTimeProvider();
        ChunkBoard board = Board(time);
        AdaptiveStrategy ours = Ours(board, Rates(10e9));
        ClaimAll(ours);
        ours.Decide(0, ChunkState.Fetching, new FetchProgress(8, 0, false), out TimeSpan patience);

        time.Advance(patience * 0.75);
        Assert.Equal(EngineMove.Wait, ours.Decide(0, ChunkState.Fetching, new FetchProgress(7, 1, false), out TimeSpan again));

        Assert.Equal(patience, again);
    }

    [Fact]
    public void Ours_AfterATakeBack_NoMoreWaitingUntilTheFetcherDeliversAgain()
    {
        var time = new FakeTimeProvider();
        ChunkBoard board = Board(time);
        AdaptiveStrategy ours = Ours(board, Rates(10e9));
        ClaimAll(ours);
        ours.Decide(0, ChunkState.Fetching, new FetchProgress(8, 0, false), out TimeSpan patience);
        time.Advance(patience);
        ours.Decide(0, ChunkState.Fetching, new FetchProgress(8, 0, false), out _);
        ours.TookBack(0, restored: 0);

        Assert.Equal(EngineMove.TakeBackRest, ours.Decide(5, ChunkState.Fetching, new FetchProgress(3, 0, false), out _));
        Assert.Equal(EngineMove.Wait, ours.Decide(5, ChunkState.Fetching, new FetchProgress(3, 1, false), out _));
    }

    [Fact]
    public void Ours_SlowLink_EngineComputesTheFrontInOneRunThatTheFetcherCannotReach()
    {
        ChunkBoard board = Board(new FakeTimeProvider());
        FetchRates rates = Rates(5e6); // a 1 MB chunk in about 200 ms; computing it takes 50 ms
        AdaptiveStrategy ours = Ours(board, rates);
        Assert.Equal(-1, ours.EngineWaitingFor);

        int end = ours.EngineRunEnd(0);

        // Several chunks in one call, but none the fetcher could deliver before the call ends: at the run's end the
        // fetcher, from the back at its fastest, is still at least one chunk away.
        Assert.InRange(end, 2, Chunks - 1);
        double run = Enumerable.Range(0, end).Sum(c => rates.ComputeSeconds(c, ChunkTokens));
        double fetchPerChunk = ChunkBytes / 5e6;
        Assert.True(Chunks - 1 - (run / fetchPerChunk) >= end, $"run [0, {end}) of {run:F2} s reaches the fetcher's chunks");

        // Once the fetcher has claimed chunks from the back, a run never takes them.
        List<int> claimed = ClaimAll(ours);
        Assert.NotEmpty(claimed);
        Assert.True(ours.EngineRunEnd(0) <= claimed.Min(), $"run end {ours.EngineRunEnd(0)}, fetcher from {claimed.Min()}");
    }

    [Fact]
    public void Ours_FastLinkOrCake_OneChunkPerCall()
    {
        ChunkBoard board = Board(new FakeTimeProvider());
        AdaptiveStrategy ours = Ours(board, Rates(10e9));
        Assert.Equal(0, ours.EngineWaitingFor);
        Assert.Equal(1, ours.EngineRunEnd(0)); // it waits for the fetcher; nothing joins the chunk it computes

        Assert.Equal(4, new CakeStrategy(Board()).EngineRunEnd(3)); // Cake meets at run time: chunk by chunk
    }
}
