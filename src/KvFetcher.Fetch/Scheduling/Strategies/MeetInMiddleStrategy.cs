namespace KvFetcher.Fetch.Scheduling.Strategies;

/// <summary>
/// The fetch side that Cake and ours share: fetch back to front while the engine computes front to back, and stop where
/// they meet. The engine owns every chunk up to its position, unless it decided to wait for the fetcher there.
/// </summary>
internal abstract class MeetInMiddleStrategy(ChunkBoard board) : ChunkStrategy(board)
{
    private int _next = board.Chunks;

    /// <summary>Chunks [0, NextUnclaimed) have not been claimed by the fetcher.</summary>
    public int NextUnclaimed => Math.Max(0, Volatile.Read(ref _next));

    /// <summary>The chunk the engine decided to wait for instead of computing, or -1.</summary>
    public virtual int EngineWaitingFor => -1;

    public sealed override bool TryClaim(int inFlight, out int chunk, out KvVariant variant)
    {
        while (!IsStopped)
        {
            chunk = Interlocked.Decrement(ref _next);
            int waitingFor = EngineWaitingFor;
            if (chunk < 0 || (chunk <= Board.ComputeFrontier && !(waitingFor >= 0 && chunk >= waitingFor)))
            {
                break;
            }

            int index = Choose(chunk, inFlight);
            if (index < 0)
            {
                break; // the engine will get here first: the meeting point
            }

            ClaimResult claim = TryClaimAs(chunk, index);
            if (claim == ClaimResult.NotStored)
            {
                continue;
            }

            if (claim == ClaimResult.Claimed)
            {
                variant = Board.Ladder[index];
                return true;
            }

            break; // the engine took it
        }

        Stop();
        chunk = -1;
        variant = default;
        return false;
    }

    /// <summary>The ladder index to fetch <paramref name="chunk"/> as, or -1 to stop fetching.</summary>
    protected abstract int Choose(int chunk, int inFlight);
}
