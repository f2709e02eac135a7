using System.Diagnostics;

namespace KvFetcher.Fetch.Fetching;

/// <summary>Decides which chunk the fetcher takes next, as which variant, and when it stops.</summary>
internal interface IFetchPolicy
{
    /// <summary>
    /// Claims the next chunk (moving it from Pending to Fetching) and picks its variant; false when the fetcher should
    /// stop. <paramref name="inFlight"/> counts the chunks already in the pipeline.
    /// </summary>
    bool TryClaim(int inFlight, out int chunk, out KvVariant variant);

    void Stop();

    /// <summary>The variants this policy may pick (the fetcher sizes its buffers for the largest).</summary>
    IReadOnlyList<KvVariant> Ladder { get; }
}

/// <summary>The shared view of a request's stored prefix: chunk states, which variants each has, the engine's position.</summary>
internal sealed class PrefixState(int chunks, IReadOnlyList<KvVariant> ladder, int[] available)
{
    private int _computeFrontier;
    private long _computeChunkStart = Stopwatch.GetTimestamp();

    public int[] States { get; } = new int[chunks];

    public int Chunks => States.Length;

    public IReadOnlyList<KvVariant> Ladder { get; } = ladder;

    /// <summary>Per chunk, a bit per ladder index that is stored.</summary>
    public int[] Available { get; } = available;

    /// <summary>The chunk the engine computes or waits for now (it has passed every chunk before it).</summary>
    public int ComputeFrontier => Volatile.Read(ref _computeFrontier);

    /// <summary>Whether the engine is computing now (the fetcher's CPU stages then share the cores with it).</summary>
    public bool EngineBusy
    {
        get => Volatile.Read(ref _engineBusy);
        set => Volatile.Write(ref _engineBusy, value);
    }

    private bool _engineBusy;

    /// <summary>When the engine started on its current chunk (Stopwatch timestamp).</summary>
    public long ComputeChunkStart => Interlocked.Read(ref _computeChunkStart);

    public void SetComputeFrontier(int chunk)
    {
        Interlocked.Exchange(ref _computeChunkStart, Stopwatch.GetTimestamp());
        Volatile.Write(ref _computeFrontier, chunk);
    }

    public ChunkState StateOf(int chunk) => (ChunkState)Volatile.Read(ref States[chunk]);

    public bool TryTake(int chunk, ChunkState from, ChunkState to) =>
        Interlocked.CompareExchange(ref States[chunk], (int)to, (int)from) == (int)from;

    public bool Has(int chunk, int ladderIndex) => (Available[chunk] & (1 << ladderIndex)) != 0;

    /// <summary>The chunk the engine decided to wait for instead of computing, or -1.</summary>
    public int EngineWaitingFor
    {
        get => Volatile.Read(ref _engineWaitingFor);
        set => Volatile.Write(ref _engineWaitingFor, value);
    }

    private int _engineWaitingFor = -1;
}

/// <summary>
/// Fetch-only: every stored chunk, front to back, as one fixed variant (sequential with one slot, pipelined with more),
/// or with <paramref name="choose"/>, as the variant it picks per chunk (ladder index, given the chunks in flight).
/// </summary>
internal sealed class FetchAllPolicy(PrefixState prefix, int ladderIndex, Func<int, int, int>? choose = null) : IFetchPolicy
{
    private int _next = -1;
    private volatile bool _stopped;

    public IReadOnlyList<KvVariant> Ladder => prefix.Ladder;

    public bool TryClaim(int inFlight, out int chunk, out KvVariant variant)
    {
        variant = default;
        while (!_stopped)
        {
            chunk = Interlocked.Increment(ref _next);
            if (chunk >= prefix.Chunks)
            {
                break;
            }

            int index = choose?.Invoke(chunk, inFlight) ?? ladderIndex;
            variant = prefix.Ladder[index];
            if (!prefix.Has(chunk, index))
            {
                prefix.TryTake(chunk, ChunkState.Pending, ChunkState.Failed);
                continue;
            }

            if (prefix.TryTake(chunk, ChunkState.Pending, ChunkState.Fetching))
            {
                return true;
            }
        }

        chunk = -1;
        return false;
    }

    public void Stop() => _stopped = true;
}

/// <summary>
/// Cake: fetch back to front while the engine computes front to back; stop when the fetcher reaches the engine.
/// With a fixed variant this is Cake as published; <see cref="AdaptivePolicy"/> adds prediction and per-chunk quality.
/// </summary>
internal class MeetInMiddlePolicy(PrefixState prefix, int ladderIndex) : IFetchPolicy
{
    private int _next = prefix.Chunks;
    private volatile bool _stopped;

    protected PrefixState Prefix => prefix;

    public IReadOnlyList<KvVariant> Ladder => prefix.Ladder;

    /// <summary>Whether the fetcher has stopped claiming (it met the engine, or failed).</summary>
    public bool IsStopped => _stopped;

    /// <summary>Chunks [0, NextUnclaimed) have not been claimed by the fetcher.</summary>
    public int NextUnclaimed => Math.Max(0, Volatile.Read(ref _next));

    public bool TryClaim(int inFlight, out int chunk, out KvVariant variant)
    {
        while (!_stopped)
        {
            // The engine owns every chunk up to its position, unless it decided to wait for the fetcher there.
            chunk = Interlocked.Decrement(ref _next);
            int waitingFor = prefix.EngineWaitingFor;
            if (chunk < 0 || (chunk <= prefix.ComputeFrontier && !(waitingFor >= 0 && chunk >= waitingFor)))
            {
                break;
            }

            int index = Choose(chunk, inFlight);
            if (index < 0)
            {
                break; // the engine will get here first: the meeting point
            }

            if (!prefix.Has(chunk, index))
            {
                prefix.TryTake(chunk, ChunkState.Pending, ChunkState.Failed);
                continue;
            }

            if (prefix.TryTake(chunk, ChunkState.Pending, ChunkState.Fetching))
            {
                variant = prefix.Ladder[index];
                return true;
            }

            break; // the engine took it
        }

        _stopped = true;
        chunk = -1;
        variant = default;
        return false;
    }

    public void Stop() => _stopped = true;

    /// <summary>The ladder index to fetch <paramref name="chunk"/> as, or -1 to stop fetching.</summary>
    protected virtual int Choose(int chunk, int inFlight) => ladderIndex;
}

/// <summary>
/// Ours: meet in the middle, with the meeting point predicted from the measured compute, bandwidth and decode rates.
/// For each chunk, every stored variant's pipelined cost is predicted; the fetcher picks the most accurate variant whose
/// predicted time to meet is within the quality slack of the fastest, and stops claiming once a chunk's predicted
/// arrival is later than the engine's predicted arrival there (the engine computes it instead of waiting).
/// </summary>
internal sealed class AdaptivePolicy(PrefixState prefix, FetchRates rates, ContextPlan plan, ReuseOptions options, bool sharedCores) : MeetInMiddlePolicy(prefix, -1)
{
    /// <summary>Variants picked, by ladder index (for the report).</summary>
    public int[] Picks { get; } = new int[prefix.Ladder.Count];

    private const double MinPatienceSeconds = 0.1;
    private double _predictedArrival = double.NaN;
    private int _patienceChunk = -1;
    private int _patienceRestored = -1;
    private long _waitingSince;
    private bool _stalled;
    private int _restoredAtStall;

    /// <summary>Chunks in the fetch pipeline now (set by the fetcher).</summary>
    public Func<int> InFlight { get; set; } = () => 0;

    /// <summary>
    /// The engine's patience, asked while it waits for <paramref name="chunk"/> (pending for the fetcher, or being
    /// fetched): true once the fetcher has delivered nothing (<paramref name="restored"/> counts its chunks) for twice
    /// the arrival predicted when the engine chose to wait (at least 0.1 s), and never later than computing the chunk
    /// takes: a slow or stalled store costs about that once per request. After a take-back the engine waits no more
    /// in this request until the fetcher restores another chunk.
    /// </summary>
    public bool PatienceExhausted(int chunk, int restored)
    {
        if (_patienceChunk != chunk || _patienceRestored != restored)
        {
            // Waiting starts, or the fetcher made progress: the clock starts again.
            _patienceChunk = chunk;
            _patienceRestored = restored;
            _waitingSince = Stopwatch.GetTimestamp();
        }

        if (_stalled && restored > _restoredAtStall)
        {
            _stalled = false;
        }

        double compute = rates.ComputeSeconds(chunk, plan.ChunkTokens);
        double patience = double.IsNaN(_predictedArrival) ? compute : Math.Min(compute, Math.Max(MinPatienceSeconds, 2 * _predictedArrival));
        return _stalled || Stopwatch.GetElapsedTime(_waitingSince).TotalSeconds >= patience;
    }

    /// <summary>
    /// The engine took <paramref name="chunk"/> back: the fetcher is slower than predicted, so the bandwidth estimate
    /// drops to what the wait showed and the fetcher no longer fetches down to the engine.
    /// </summary>
    public void TookBack(int chunk, int restored)
    {
        double waited = Stopwatch.GetElapsedTime(_waitingSince).TotalSeconds;
        if (_patienceChunk == chunk && !_stalled && !double.IsNaN(_predictedArrival))
        {
            rates.ObserveStall(_predictedArrival, waited);
        }

        _stalled = true;
        _restoredAtStall = restored;
        Prefix.EngineWaitingFor = -1;
    }

    /// <summary>
    /// The engine's side of the prediction: whether the fetcher is predicted to deliver <paramref name="chunk"/> before
    /// the engine could compute it (then the engine waits for it instead of computing). Once the engine defers, the
    /// fetcher stops comparing against the engine and fetches down to the chunk the engine waits for.
    /// </summary>
    public bool EngineShouldWait(int chunk)
    {
        if (IsStopped || Prefix.EngineWaitingFor == chunk)
        {
            return !IsStopped;
        }

        double fastest = double.MaxValue, latency = 0;
        for (int v = 0; v < Prefix.Ladder.Count; v++)
        {
            if (!Prefix.Has(chunk, v) || (options.LosslessOnly && !Prefix.Ladder[v].IsLossless))
            {
                continue;
            }

            (double perChunk, double decode, double restore) = PerChunk(v, engineBusy: false);
            if (perChunk < fastest)
            {
                (fastest, latency) = (perChunk, decode + restore);
            }
        }

        // Computing this chunk instead costs its compute time plus, when the engine computes on the host's cores (the CPU
        // backend), the CPU work of the chunks fetched meanwhile: decode and restore then take cores from it. A GPU
        // engine loses nothing to them.
        int ahead = InFlight() + Math.Max(0, NextUnclaimed - chunk);
        double arrival = (ahead * fastest) + latency;
        double computeInstead = rates.ComputeSeconds(chunk, plan.ChunkTokens) + (sharedCores ? Math.Max(0, ahead - 1) * latency : 0);
        bool wait = fastest < double.MaxValue && arrival < computeInstead;
        if (wait)
        {
            _predictedArrival = arrival;
            Prefix.EngineWaitingFor = chunk;
        }

        return wait;
    }

    private (double PerChunk, double Decode, double Restore) PerChunk(int ladderIndex, bool engineBusy)
    {
        (double transfer, double decode, double restore) = rates.ChunkSeconds(Prefix.Ladder[ladderIndex], plan.ChunkBytes, engineBusy);
        double perChunk = Math.Max(transfer, Math.Max(decode / options.DecodeWorkers, restore));
        return (perChunk, decode, restore);
    }

    protected override int Choose(int chunk, int inFlight)
    {
        int frontier = Prefix.ComputeFrontier;
        double elapsedOnCurrent = Stopwatch.GetElapsedTime(Prefix.ComputeChunkStart).TotalSeconds;

        // Seconds until the engine reaches this chunk, and its mean cost per chunk over the gap.
        double engineArrival = -elapsedOnCurrent;
        for (int i = frontier; i < chunk; i++)
        {
            engineArrival += rates.ComputeSeconds(i, plan.ChunkTokens);
        }

        int gap = Math.Max(1, chunk - frontier + 1);
        double computePerChunk = Math.Max(1e-6, (engineArrival + elapsedOnCurrent + rates.ComputeSeconds(chunk, plan.ChunkTokens)) / gap);
        int best = -1;
        double bestMeet = double.MaxValue;
        Span<double> meet = stackalloc double[Prefix.Ladder.Count];
        Span<double> arrival = stackalloc double[Prefix.Ladder.Count];
        for (int v = 0; v < Prefix.Ladder.Count; v++)
        {
            meet[v] = double.NaN;
            if (!Prefix.Has(chunk, v) || (options.LosslessOnly && !Prefix.Ladder[v].IsLossless))
            {
                continue;
            }

            // While the engine computes, decode and restore share the cores with it; once it waits, they have them.
            (double perChunk, double decode, double restore) = PerChunk(v, engineBusy: sharedCores && Prefix.EngineWaitingFor < 0);
            arrival[v] = ((inFlight + 1) * perChunk) + decode + restore;
            meet[v] = gap / ((1 / computePerChunk) + (1 / perChunk));
            if (meet[v] < bestMeet)
            {
                bestMeet = meet[v];
            }
        }

        for (int v = 0; v < meet.Length; v++)
        {
            if (!double.IsNaN(meet[v]) && meet[v] <= bestMeet * (1 + options.QualitySlack) && (best < 0 || Prefix.Ladder[v].Rank > Prefix.Ladder[best].Rank ||
                (Prefix.Ladder[v].Rank == Prefix.Ladder[best].Rank && meet[v] < meet[best])))
            {
                best = v;
            }
        }

        // Fetch only what arrives before the engine would get there itself (unless the engine waits for the fetcher).
        bool engineWaits = Prefix.EngineWaitingFor >= 0 && Prefix.EngineWaitingFor <= chunk;
        if (best < 0 || (!engineWaits && arrival[best] >= engineArrival))
        {
            return -1;
        }

        Interlocked.Increment(ref Picks[best]);
        return best;
    }
}

/// <summary>
/// Fetch-only over several stored variants, for a request that waits off the engine: per chunk, the most accurate
/// stored variant whose predicted pipelined time per chunk (the slowest of transfer, decode over the workers and
/// restore, from the measured rates) is within the quality slack of the fastest stored one.
/// </summary>
internal sealed class FastestVariant(PrefixState prefix, FetchRates rates, ContextPlan plan, ReuseOptions options)
{
    public int Choose(int chunk, int inFlight)
    {
        Span<double> cost = stackalloc double[prefix.Ladder.Count];
        double fastest = double.MaxValue;
        for (int v = 0; v < cost.Length; v++)
        {
            cost[v] = double.NaN;
            if (!prefix.Has(chunk, v) || (options.LosslessOnly && !prefix.Ladder[v].IsLossless))
            {
                continue;
            }

            (double transfer, double decode, double restore) = rates.ChunkSeconds(prefix.Ladder[v], plan.ChunkBytes);
            cost[v] = Math.Max(transfer, Math.Max(decode / options.DecodeWorkers, restore));
            fastest = Math.Min(fastest, cost[v]);
        }

        int best = -1;
        for (int v = 0; v < cost.Length; v++)
        {
            if (!double.IsNaN(cost[v]) && cost[v] <= fastest * (1 + options.QualitySlack) &&
                (best < 0 || prefix.Ladder[v].Rank > prefix.Ladder[best].Rank || (prefix.Ladder[v].Rank == prefix.Ladder[best].Rank && cost[v] < cost[best])))
            {
                best = v;
            }
        }

        return Math.Max(best, 0); // none stored: index 0, which the policy marks failed
    }
}
