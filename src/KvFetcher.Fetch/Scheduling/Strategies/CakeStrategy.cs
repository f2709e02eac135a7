namespace KvFetcher.Fetch.Scheduling.Strategies;

/// <summary>
/// Cake as published (<c>cake-VARIANT</c>): the fetcher takes chunks back to front as one variant while the engine
/// computes front to back; the engine checks whether its next chunk is loaded and computes it if not, even while it is
/// in flight (that transfer is wasted: the restore stage drops data for a chunk it no longer holds).
/// </summary>
internal sealed class CakeStrategy(ChunkBoard board) : MeetInMiddleStrategy(board)
{
    protected override int Choose(int chunk, int inFlight) => 0;

    protected override EngineMove DecideOpen(int chunk, ChunkState state, FetchProgress fetch, out TimeSpan recheck)
    {
        recheck = Timeout.InfiniteTimeSpan;
        return EngineMove.Compute;
    }
}
