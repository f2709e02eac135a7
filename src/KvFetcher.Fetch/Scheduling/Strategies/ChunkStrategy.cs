namespace KvFetcher.Fetch.Scheduling.Strategies;

/// <summary>What the engine does next about the chunk in front of it.</summary>
internal enum EngineMove
{
    /// <summary>Wait for the board to change (or for the time the strategy gives).</summary>
    Wait,

    /// <summary>Compute this chunk (taking it from whoever has it).</summary>
    Compute,

    /// <summary>The fetch is slower than predicted: stop fetching and compute this chunk and everything not delivered after it.</summary>
    TakeBackRest,
}

/// <summary>The fetch side as the engine sees it when it decides: chunks in the pipeline, chunks restored, whether it has ended.</summary>
internal readonly record struct FetchProgress(int InFlight, int Restored, bool Ended);

/// <summary>
/// One way of obtaining a request's stored prefix, both of its sides in one class: the fetch side (which chunk the
/// fetcher claims next, as which variant, and when it stops) and the engine side (for the chunk in front of the engine:
/// compute it, take it back, or wait). A strategy is built complete before the fetcher starts; it changes chunk states
/// only through its <see cref="ChunkBoard"/>.
/// </summary>
internal abstract class ChunkStrategy(ChunkBoard board)
{
    private volatile bool _stopped;

    public ChunkBoard Board { get; } = board;

    /// <summary>Whether the fetch side has stopped claiming (it met the engine, failed, or was told to).</summary>
    public bool IsStopped => _stopped;

    /// <summary>
    /// Fetch side: claims the next chunk (Pending to Fetching) and picks its variant; false when the fetcher should stop.
    /// <paramref name="inFlight"/> counts the chunks already in the pipeline.
    /// </summary>
    public abstract bool TryClaim(int inFlight, out int chunk, out KvVariant variant);

    /// <summary>Fetch side: claims no more chunks. The engine is woken, since what it waits for may now never come.</summary>
    public void Stop()
    {
        if (!_stopped)
        {
            _stopped = true;
            Board.Wake();
        }
    }

    /// <summary>
    /// Engine side: what to do about <paramref name="chunk"/>, found in <paramref name="state"/>. A chunk whose fetch
    /// failed is computed, one being restored is waited for; the strategy decides about the rest. When it says
    /// <see cref="EngineMove.Wait"/>, <paramref name="recheck"/> is how long until it wants to decide again even if the
    /// board does not change (<see cref="Timeout.InfiniteTimeSpan"/>: only on a change).
    /// </summary>
    public EngineMove Decide(int chunk, ChunkState state, FetchProgress fetch, out TimeSpan recheck)
    {
        recheck = Timeout.InfiniteTimeSpan;
        return state switch
        {
            ChunkState.Failed => EngineMove.Compute,
            ChunkState.Pending or ChunkState.Fetching => DecideOpen(chunk, state, fetch, out recheck),
            _ => EngineMove.Wait,
        };
    }

    /// <summary>
    /// Engine side: how many lower layers of <paramref name="chunk"/> the engine computes while the fetcher brings the
    /// upper ones (0: the chunk is not split by layers; it is computed or fetched whole).
    /// </summary>
    public virtual int SplitLayersOf(int chunk) => 0;

    /// <summary>Fetch side: the first layer the fetcher brings of <paramref name="chunk"/> (0: the whole chunk).</summary>
    public virtual int LayerStartOf(int chunk) => 0;

    /// <summary>
    /// Engine side, once it computes <paramref name="chunk"/>: the end of the run of chunks it may compute with it in one
    /// call (chunks [chunk, end), those still pending). One long prefill costs less than as many chunk-sized ones (a
    /// GPU pays per call), but a chunk taken into a run can no longer be fetched, so only chunks the fetcher could not
    /// deliver before the run ends belong in it. Default: <paramref name="chunk"/> + 1, one chunk per call.
    /// </summary>
    public virtual int EngineRunEnd(int chunk) => chunk + 1;

    /// <summary>
    /// The plan this strategy follows, where a strategy is one of several plans chosen from the measured rates
    /// (ours-layer: <c>ours</c> or <c>layer-split</c>); null for the strategies that have one plan only.
    /// </summary>
    public virtual string? Plan => null;

    /// <summary>Engine side: the engine took <paramref name="chunk"/> and the rest back (after <see cref="EngineMove.TakeBackRest"/>).</summary>
    public virtual void TookBack(int chunk, int restored)
    {
    }

    /// <summary>Engine side, for a chunk that is pending or being fetched.</summary>
    protected abstract EngineMove DecideOpen(int chunk, ChunkState state, FetchProgress fetch, out TimeSpan recheck);

    /// <summary>
    /// Fetch side: claims <paramref name="chunk"/> as ladder variant <paramref name="ladderIndex"/>. A chunk without
    /// that variant stored is marked failed (the engine computes it) and not claimed.
    /// </summary>
    protected ClaimResult TryClaimAs(int chunk, int ladderIndex)
    {
        if (!Board.Has(chunk, ladderIndex))
        {
            Board.TryMove(chunk, ChunkState.Pending, ChunkState.Failed);
            return ClaimResult.NotStored;
        }

        return Board.TryMove(chunk, ChunkState.Pending, ChunkState.Fetching) ? ClaimResult.Claimed : ClaimResult.Taken;
    }

    protected enum ClaimResult
    {
        Claimed,

        /// <summary>The variant is not stored; the chunk is now failed.</summary>
        NotStored,

        /// <summary>Someone else (the engine) has it.</summary>
        Taken,
    }
}
