namespace KvFetcher.Fetch.Scheduling.Strategies;

/// <summary>
/// Fetch-only (<c>fetch-VARIANT</c>, <c>fetch-VARIANT-seq</c>, and the server's waiting queue): the fetcher takes every
/// stored chunk front to back, as the ladder's only variant or, with a <see cref="VariantChoice"/>, as the variant the
/// rule picks per chunk from the measured rates. The engine computes only what the fetcher could not deliver: chunks
/// that failed, and once the fetcher has ended, chunks it never claimed.
/// </summary>
internal sealed class FetchOnlyStrategy(ChunkBoard board, VariantChoice? choice = null) : ChunkStrategy(board)
{
    private int _next = -1;

    public override bool TryClaim(int inFlight, out int chunk, out KvVariant variant)
    {
        while (!IsStopped)
        {
            chunk = Interlocked.Increment(ref _next);
            if (chunk >= Board.Chunks)
            {
                break;
            }

            int index = choice?.Fastest(Board, chunk) ?? 0;
            variant = Board.Ladder[index];
            if (TryClaimAs(chunk, index) == ClaimResult.Claimed)
            {
                return true;
            }
        }

        chunk = -1;
        variant = default;
        return false;
    }

    protected override EngineMove DecideOpen(int chunk, ChunkState state, FetchProgress fetch, out TimeSpan recheck)
    {
        recheck = Timeout.InfiniteTimeSpan;
        return state == ChunkState.Pending && fetch.Ended ? EngineMove.Compute : EngineMove.Wait;
    }
}
