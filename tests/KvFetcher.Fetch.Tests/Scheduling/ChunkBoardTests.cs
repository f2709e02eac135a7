using KvFetcher.Fetch.Scheduling;
using Microsoft.Extensions.Time.Testing;

namespace KvFetcher.Fetch.Tests.Scheduling;

/// <summary>The chunk board: only legal transitions, exactly one winner per chunk, and waits that end on a change or a deadline.</summary>
public sealed class ChunkBoardTests
{
    private static ChunkBoard Board(int chunks = 4, TimeProvider? time = null) =>
        new(chunks, [KvVariant.Raw], [.. Enumerable.Repeat(1, chunks)], time);

    [Fact]
    public void IsLegal_EveryPair_ExactlyTheTenTransitionsOfTheDiagram()
    {
        (ChunkState From, ChunkState To)[] expected =
        [
            (ChunkState.Pending, ChunkState.Fetching), (ChunkState.Pending, ChunkState.Failed), (ChunkState.Pending, ChunkState.Computing),
            (ChunkState.Fetching, ChunkState.Restoring), (ChunkState.Fetching, ChunkState.Failed), (ChunkState.Fetching, ChunkState.Computing),
            (ChunkState.Restoring, ChunkState.Filled), (ChunkState.Restoring, ChunkState.Failed),
            (ChunkState.Failed, ChunkState.Computing),
            (ChunkState.Computing, ChunkState.Filled),
        ];

        (ChunkState, ChunkState)[] legal = [.. from source in Enum.GetValues<ChunkState>()
                                               from target in Enum.GetValues<ChunkState>()
                                               where ChunkBoard.IsLegal(source, target)
                                               select (source, target)];

        Assert.Equal(expected.Order(), legal.Order());
    }

    [Theory]
    [InlineData((int)ChunkState.Pending, (int)ChunkState.Filled)]
    [InlineData((int)ChunkState.Pending, (int)ChunkState.Restoring)]
    [InlineData((int)ChunkState.Computing, (int)ChunkState.Failed)]
    [InlineData((int)ChunkState.Restoring, (int)ChunkState.Computing)]
    [InlineData((int)ChunkState.Failed, (int)ChunkState.Fetching)]
    [InlineData((int)ChunkState.Filled, (int)ChunkState.Computing)]
    [InlineData((int)ChunkState.Filled, (int)ChunkState.Pending)]
    public void TryMove_IllegalTransition_ThrowsAndLeavesTheChunk(int fromState, int toState)
    {
        (var from, var to) = ((ChunkState)fromState, (ChunkState)toState);
        ChunkBoard board = Board();

        var error = Assert.Throws<InvalidOperationException>(() => board.TryMove(1, from, to));

        Assert.Contains($"from {from} to {to}", error.Message, StringComparison.Ordinal);
        Assert.Equal(ChunkState.Pending, board.StateOf(1));
        Assert.Equal(0, board.Version);
    }

    [Fact]
    public void TryMove_FetchToFilled_CountsTheChunkInFlightUntilSettled()
    {
        ChunkBoard board = Board();

        Assert.True(board.TryMove(2, ChunkState.Pending, ChunkState.Fetching));
        Assert.Equal(1, board.InFlight);
        Assert.True(board.TryMove(2, ChunkState.Fetching, ChunkState.Restoring));
        Assert.Equal(1, board.InFlight);
        board.Move(2, ChunkState.Restoring, ChunkState.Filled);

        Assert.Equal(0, board.InFlight);
        Assert.Equal(ChunkState.Filled, board.StateOf(2));
        Assert.Equal(3, board.Version);
    }

    [Fact]
    public void TryMove_EngineTookTheChunkFirst_FetcherGetsFalse()
    {
        ChunkBoard board = Board();
        Assert.True(board.TryMove(0, ChunkState.Pending, ChunkState.Computing));

        bool fetched = board.TryMove(0, ChunkState.Pending, ChunkState.Fetching);

        Assert.False(fetched);
        Assert.Equal(ChunkState.Computing, board.StateOf(0));
        Assert.Equal(0, board.InFlight);
    }

    [Fact]
    public void TryMove_EngineTakesBackAChunkBeingFetched_NoLongerInFlight()
    {
        ChunkBoard board = Board();
        Assert.True(board.TryMove(3, ChunkState.Pending, ChunkState.Fetching));

        Assert.True(board.TryMove(3, ChunkState.Fetching, ChunkState.Computing));

        Assert.Equal(0, board.InFlight);
        Assert.False(board.TryMove(3, ChunkState.Fetching, ChunkState.Restoring)); // the restore stage then drops its data
    }

    [Fact]
    public void Move_ChunkNotInTheExpectedState_Throws()
    {
        ChunkBoard board = Board();

        Assert.Throws<InvalidOperationException>(() => board.Move(0, ChunkState.Computing, ChunkState.Filled));
    }

    [Fact]
    public async Task WaitForChangeAsync_ChangeAfterTheWaitStarts_CompletesTrue()
    {
        ChunkBoard board = Board();
        int version = board.Version;

        Task<bool> wait = board.WaitForChangeAsync(version, Timeout.InfiniteTimeSpan, TestContext.Current.CancellationToken);
        Assert.False(wait.IsCompleted);
        board.TryMove(0, ChunkState.Pending, ChunkState.Fetching);

        Assert.True(await wait.WaitAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task WaitForChangeAsync_ChangedSinceTheVersionWasRead_CompletesAtOnce()
    {
        ChunkBoard board = Board();
        int version = board.Version;
        board.TryMove(0, ChunkState.Pending, ChunkState.Computing);

        Task<bool> wait = board.WaitForChangeAsync(version, Timeout.InfiniteTimeSpan, TestContext.Current.CancellationToken);

        Assert.True(wait.IsCompleted);
        Assert.True(await wait);
    }

    [Fact]
    public async Task WaitForChangeAsync_NothingChangesBeforeTheDeadline_FalseWhenTheClockPassesIt()
    {
        var time = new FakeTimeProvider();
        ChunkBoard board = Board(time: time);

        Task<bool> wait = board.WaitForChangeAsync(board.Version, TimeSpan.FromMilliseconds(100), TestContext.Current.CancellationToken);
        time.Advance(TimeSpan.FromMilliseconds(99));
        Assert.False(wait.IsCompleted);
        time.Advance(TimeSpan.FromMilliseconds(1));

        Assert.False(await wait.WaitAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task EndFetch_EngineWaiting_WokenAndSeesTheFetchEnded()
    {
        ChunkBoard board = Board();
        Task<bool> wait = board.WaitForChangeAsync(board.Version, Timeout.InfiniteTimeSpan, TestContext.Current.CancellationToken);

        board.EndFetch();

        Assert.True(await wait.WaitAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken));
        Assert.True(board.FetchEnded);
    }

    [Fact]
    public async Task WaitForChangeAsync_Cancelled_ThrowsOperationCanceled()
    {
        ChunkBoard board = Board();
        using var cancel = new CancellationTokenSource();

        Task<bool> wait = board.WaitForChangeAsync(board.Version, Timeout.InfiniteTimeSpan, cancel.Token);
        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => wait);
    }
}
