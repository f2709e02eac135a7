using KvFetcher.Fetch.Fetching;

namespace KvFetcher.Fetch.Scheduling.Strategies;

/// <summary>
/// Ours (<c>ours</c>): meet in the middle, with the meeting point predicted from the measured compute, bandwidth and
/// decode rates.
/// Fetch side: for each chunk, every stored variant's pipelined cost is predicted; the fetcher picks by the
/// <see cref="VariantChoice"/> rule over the predicted time to meet, and stops claiming once a chunk's predicted arrival
/// is later than the engine's predicted arrival there (the engine computes it instead of waiting).
/// Engine side: the engine waits for a chunk when the fetcher is predicted to deliver it before the engine could compute
/// it, and only until the fetcher is clearly later than predicted (never longer than computing the chunk takes); then it
/// takes back everything not delivered and computes it in one pass.
/// </summary>
internal sealed class AdaptiveStrategy : MeetInMiddleStrategy
{
    private const double MinPatienceSeconds = 0.1;
    private readonly FetchRates _rates;
    private readonly VariantChoice _choice;
    private readonly int _chunkTokens;
    private readonly bool _sharedCores;
    private int _engineWaitingFor = -1;
    private double _predictedArrival = double.NaN;
    private int _patienceChunk = -1;
    private int _patienceRestored = -1;
    private long _waitingSince;
    private bool _stalled;
    private int _restoredAtStall;

    /// <param name="board">The request's chunk board.</param>
    /// <param name="rates">The measured rates the predictions come from.</param>
    /// <param name="choice">The variant-choice rule and cost formula.</param>
    /// <param name="chunkTokens">Tokens per chunk.</param>
    /// <param name="sharedCores">Whether the engine computes on the host's cores (decode and restore then take cores from it).</param>
    public AdaptiveStrategy(ChunkBoard board, FetchRates rates, VariantChoice choice, int chunkTokens, bool sharedCores)
        : base(board)
    {
        _rates = rates;
        _choice = choice;
        _chunkTokens = chunkTokens;
        _sharedCores = sharedCores;

        // The engine's decision on chunk 0 (compute it, or wait for the fetch) is made before anything is claimed, so a
        // fast fetcher cannot reach the front before it is made.
        EngineShouldWait(0, inFlight: 0);
    }

    public override int EngineWaitingFor => Volatile.Read(ref _engineWaitingFor);

    public override string Plan => "ours";

    public override void TookBack(int chunk, int restored)
    {
        double waited = Board.Time.GetElapsedTime(_waitingSince).TotalSeconds;
        if (_patienceChunk == chunk && !_stalled && !double.IsNaN(_predictedArrival))
        {
            // The link is at most as fast as the wait showed.
            _rates.ObserveStall(_predictedArrival, waited);
        }

        _stalled = true;
        _restoredAtStall = restored;
        Volatile.Write(ref _engineWaitingFor, -1);
    }

    protected override EngineMove DecideOpen(int chunk, ChunkState state, FetchProgress fetch, out TimeSpan recheck)
    {
        recheck = Timeout.InfiniteTimeSpan;
        bool engineComputes = fetch.Ended || !EngineShouldWait(chunk, fetch.InFlight);
        if (state == ChunkState.Pending && engineComputes)
        {
            return EngineMove.Compute;
        }

        // Fetching, or pending and left to the fetcher: wait, with patience.
        TimeSpan left = PatienceLeft(chunk, fetch.Restored);
        if (left <= TimeSpan.Zero)
        {
            return EngineMove.TakeBackRest;
        }

        recheck = left;
        return EngineMove.Wait;
    }

    /// <summary>
    /// The engine's patience while it waits for <paramref name="chunk"/>: it runs out once the fetcher has delivered
    /// nothing (<paramref name="restored"/> counts its chunks) for twice the arrival predicted when the engine chose to
    /// wait (at least 0.1 s), and never later than computing the chunk takes: a slow or stalled store costs about that
    /// once per request. After a take-back the engine waits no more in this request until the fetcher restores another
    /// chunk.
    /// </summary>
    private TimeSpan PatienceLeft(int chunk, int restored)
    {
        if (_patienceChunk != chunk || _patienceRestored != restored)
        {
            // Waiting starts, or the fetcher made progress: the clock starts again.
            _patienceChunk = chunk;
            _patienceRestored = restored;
            _waitingSince = Board.Time.GetTimestamp();
        }

        if (_stalled && restored > _restoredAtStall)
        {
            _stalled = false;
        }

        if (_stalled)
        {
            return TimeSpan.Zero;
        }

        double compute = _rates.ComputeSeconds(chunk, _chunkTokens);
        double patience = double.IsNaN(_predictedArrival) ? compute : Math.Min(compute, Math.Max(MinPatienceSeconds, 2 * _predictedArrival));
        return TimeSpan.FromSeconds(patience) - Board.Time.GetElapsedTime(_waitingSince);
    }

    /// <summary>
    /// The run grows while the fetcher, delivering from its next unclaimed chunk downwards at the fastest allowed
    /// variant's pipelined rate, is predicted not to reach the run's next chunk (with one chunk to spare) before the run,
    /// computed at the chunk-by-chunk rate (which one call only beats), has ended. Chunks the fetcher has claimed are
    /// never in it.
    /// </summary>
    public override int EngineRunEnd(int chunk)
    {
        int end = chunk + 1;
        (double fastest, _) = FastestFetch(chunk);
        if (IsStopped || fastest == double.MaxValue || EngineWaitingFor >= 0)
        {
            return end; // the engine's own take (stopped fetcher) or its waiting decides instead
        }

        int unclaimed = NextUnclaimed;
        double seconds = _rates.ComputeSeconds(chunk, _chunkTokens);
        while (end < unclaimed)
        {
            double next = seconds + _rates.ComputeSeconds(end, _chunkTokens);
            int fetcherReach = unclaimed - 1 - (int)Math.Ceiling(next / Math.Max(1e-9, fastest));
            if (end >= fetcherReach)
            {
                break;
            }

            seconds = next;
            end++;
        }

        return end;
    }

    /// <summary>The fastest allowed variant's pipelined cost per chunk of <paramref name="chunk"/>, and its decode plus restore latency (MaxValue: none may be fetched).</summary>
    private (double PerChunk, double Latency) FastestFetch(int chunk)
    {
        double fastest = double.MaxValue, latency = 0;
        for (int v = 0; v < Board.Ladder.Count; v++)
        {
            if (!_choice.MayFetch(Board, chunk, v))
            {
                continue;
            }

            (double perChunk, double decode, double restore) = _choice.Cost(Board.Ladder[v], engineBusy: false);
            if (perChunk < fastest)
            {
                (fastest, latency) = (perChunk, decode + restore);
            }
        }

        return (fastest, latency);
    }

    /// <summary>
    /// Whether the fetcher is predicted to deliver <paramref name="chunk"/> before the engine could compute it (then the
    /// engine waits for it instead of computing). Once the engine defers, the fetcher stops comparing against the engine
    /// and fetches down to the chunk the engine waits for.
    /// </summary>
    private bool EngineShouldWait(int chunk, int inFlight)
    {
        if (IsStopped || EngineWaitingFor == chunk)
        {
            return !IsStopped;
        }

        (double fastest, double latency) = FastestFetch(chunk);

        // Computing this chunk instead costs its compute time plus, when the engine computes on the host's cores (the CPU
        // backend), the CPU work of the chunks fetched meanwhile: decode and restore then take cores from it. A GPU
        // engine loses nothing to them.
        int ahead = inFlight + Math.Max(0, NextUnclaimed - chunk);
        double arrival = (ahead * fastest) + latency;
        double computeInstead = _rates.ComputeSeconds(chunk, _chunkTokens) + (_sharedCores ? Math.Max(0, ahead - 1) * latency : 0);
        bool wait = fastest < double.MaxValue && arrival < computeInstead;
        if (wait)
        {
            _predictedArrival = arrival;
            Volatile.Write(ref _engineWaitingFor, chunk);
        }

        return wait;
    }

    protected override int Choose(int chunk, int inFlight)
    {
        int frontier = Board.ComputeFrontier;

        // Progress on the engine's current chunk counts only while the engine computes it, and at most its predicted
        // compute time: an engine that serves other requests first (the server's batch) has not started it yet.
        double elapsedOnCurrent = Board.EngineComputing
            ? Math.Min(Board.Time.GetElapsedTime(Board.ComputeChunkStart).TotalSeconds, _rates.ComputeSeconds(frontier, _chunkTokens))
            : 0;

        // Seconds until the engine reaches this chunk, and its mean cost per chunk over the gap.
        double engineArrival = -elapsedOnCurrent;
        for (int i = frontier; i < chunk; i++)
        {
            engineArrival += _rates.ComputeSeconds(i, _chunkTokens);
        }

        int gap = Math.Max(1, chunk - frontier + 1);
        double computePerChunk = Math.Max(1e-6, (engineArrival + elapsedOnCurrent + _rates.ComputeSeconds(chunk, _chunkTokens)) / gap);
        int waitingFor = EngineWaitingFor;
        Span<double> meet = stackalloc double[Board.Ladder.Count];
        Span<double> arrival = stackalloc double[Board.Ladder.Count];
        for (int v = 0; v < meet.Length; v++)
        {
            meet[v] = double.NaN;
            if (!_choice.MayFetch(Board, chunk, v))
            {
                continue;
            }

            // While the engine computes, decode and restore share the cores with it; once it waits, they have them.
            (double perChunk, double decode, double restore) = _choice.Cost(Board.Ladder[v], engineBusy: _sharedCores && waitingFor < 0);
            arrival[v] = ((inFlight + 1) * perChunk) + decode + restore;
            meet[v] = gap / ((1 / computePerChunk) + (1 / perChunk));
        }

        int best = _choice.MostAccurateWithinSlack(Board.Ladder, meet);

        // Fetch only what arrives before the engine would get there itself (unless the engine waits for the fetcher).
        bool engineWaits = waitingFor >= 0 && waitingFor <= chunk;
        return best < 0 || (!engineWaits && arrival[best] >= engineArrival) ? -1 : best;
    }
}
