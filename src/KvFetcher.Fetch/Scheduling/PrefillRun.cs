using System.Diagnostics;
using KvFetcher.Engine;
using KvFetcher.Fetch.Fetching;
using KvFetcher.Fetch.Publishing;
using KvFetcher.Fetch.Restoring;
using KvFetcher.Fetch.Scheduling.Strategies;
using KvFetcher.Fetch.Telemetry;
using KvFetcher.Store;

namespace KvFetcher.Fetch.Scheduling;

/// <summary>What a request's run reads from the reuse instance it runs in, each stage's part of the options apart.</summary>
/// <param name="Store">Where chunks live.</param>
/// <param name="Rates">Measured rates (shared across requests).</param>
/// <param name="Restorer">How fetched chunks reach the cache.</param>
/// <param name="Fetcher">The fetch pipeline's workers, deadline and memory.</param>
/// <param name="Choice">The variant choice's slack and filters.</param>
/// <param name="LookupDeadline">The lookup's deadline.</param>
/// <param name="SharedCores">Whether the engine computes on the host's cores.</param>
/// <param name="Telemetry">Where per-chunk counts, fallbacks and their reasons go.</param>
internal sealed record RunContext(IKvStore Store, FetchRates Rates, IChunkRestorer Restorer, FetcherOptions Fetcher, VariantChoiceOptions Choice,
    TimeSpan LookupDeadline, bool SharedCores, ReuseTelemetry Telemetry);

/// <summary>
/// One request's prefill of its stored prefix, the one run behind <see cref="KvReuse.PrefillAsync"/> (the engine walks the
/// prefix front to back beside the fetcher), <see cref="KvReuse.FetchPrefixAsync(IInferenceSession, ContextPlan, IReadOnlyList{KvVariant}, CancellationToken)"/>
/// (the server's waiting queue: the fetcher alone, within a deadline) and the benchmarks. It owns the request's
/// <see cref="ChunkBoard"/>, its strategy and its fetcher, built complete in <see cref="StartAsync"/>: lookup, then the
/// board, the strategy on it, and the fetcher running the strategy's fetch side. Dispose it to stop the fetcher; the
/// reports and the publishing decisions read what it did.
/// </summary>
internal sealed class PrefillRun : IAsyncDisposable
{
    private readonly RunContext _context;
    private readonly IInferenceSession _session;
    private readonly ContextPlan _plan;
    private readonly Timeline _timeline;
    private readonly ChunkStrategy? _strategy;
    private readonly ChunkFetcher? _fetcher;
    private readonly bool[] _republish;
    private int _chunk;
    private int _frontierSet = -1;
    private int _suffixFrom;
    private bool _suffixStarted;
    private int _next;
    private int _rangeEnd;
    private int _lowerComputed = -1;

    private PrefillRun(RunContext context, IInferenceSession session, ContextPlan plan, Timeline timeline, Lookup lookup, ChunkStrategy? strategy, ChunkFetcher? fetcher)
    {
        _context = context;
        _session = session;
        _plan = plan;
        _timeline = timeline;
        _strategy = strategy;
        _fetcher = fetcher;
        Stored = lookup.Stored;
        LookupFailed = lookup.Failed;
        _republish = new bool[lookup.Stored];
        _suffixFrom = lookup.Stored;
    }

    /// <summary>Chunks of the prompt found in the store (the longest stored prefix).</summary>
    public int Stored { get; }

    public bool LookupFailed { get; }

    public int RestoredChunks => _fetcher?.RestoredChunks ?? 0;

    public int FailedChunks => _fetcher?.FailedChunks ?? 0;

    public long BytesFetched => _fetcher?.BytesFetched ?? 0;

    /// <summary>Chunks the engine took back from the fetcher.</summary>
    public int TakenBackChunks { get; private set; }

    /// <summary>
    /// Whether the stored prefix is settled and the engine computes the rest of the prompt (from <see cref="NextPosition"/>):
    /// the fetcher has no part in what is left.
    /// </summary>
    public bool InSuffix => _suffixStarted;

    /// <summary>The prompt position the engine computes next.</summary>
    public int NextPosition => _next;

    /// <summary>Stored chunks the engine computed (its side of the meeting).</summary>
    public int ComputedChunks { get; private set; }

    /// <summary>The off-engine wait reached its deadline.</summary>
    public bool DeadlineReached { get; private set; }

    /// <summary>
    /// Resets <paramref name="session"/>, looks up which of <paramref name="ladder"/>'s variants of the plan's chunks are
    /// stored (none when the ladder is empty), and when some are, starts fetching them by <paramref name="mode"/>.
    /// </summary>
    public static async Task<PrefillRun> StartAsync(RunContext context, IInferenceSession session, ContextPlan plan, IReadOnlyList<KvVariant> ladder,
        PrefillMode mode, bool pipelined, long startTimestamp, CancellationToken cancellationToken, Action? wake = null)
    {
        session.Reset();
        var timeline = new Timeline((plan.ReusableChunks * 5) + 8, startTimestamp);
        Lookup lookup = ladder.Count == 0 || plan.ReusableChunks == 0
            ? new Lookup(0, [], false)
            : await LookupAsync(context, plan, ladder, timeline, cancellationToken).ConfigureAwait(false);
        if (lookup.Stored == 0)
        {
            return new PrefillRun(context, session, plan, timeline, lookup, null, null);
        }

        var board = new ChunkBoard(lookup.Stored, ladder, lookup.Available, changed: wake);
        var choice = new VariantChoice(context.Rates, plan.ChunkBytes, context.Choice);
        ChunkStrategy strategy = mode switch
        {
            PrefillMode.FetchOnly => new FetchOnlyStrategy(board, ladder.Count > 1 ? choice : null),
            PrefillMode.Cake => new CakeStrategy(board),
            PrefillMode.Adaptive => new AdaptiveStrategy(board, context.Rates, choice, plan.ChunkTokens, context.SharedCores),
            PrefillMode.LayerSplit => OursLayer(context, board, choice, plan,
                groupLayers: plan.Mac is null && session.Cache.SupportsLayerRanges && context.Restorer.SupportsLayerRanges ? plan.LayerGroup : 0),
            _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, "This mode fetches nothing."),
        };
        FetcherOptions fetcherOptions = pipelined ? context.Fetcher : context.Fetcher.Sequential;
        var fetcher = new ChunkFetcher(plan, context.Store, session.Cache, context.Restorer, context.Rates, fetcherOptions, strategy, context.SharedCores, timeline, context.Telemetry,
            fetcherOptions.Slots(plan.ChunkBytes, pipelined), cancellationToken);
        return new PrefillRun(context, session, plan, timeline, lookup, strategy, fetcher);
    }

    /// <summary>
    /// ours-layer: ours' plan or a layer split, whichever the measured rates predict faster (<see cref="OursLayerPlan"/>),
    /// with the choice and both predictions logged.
    /// </summary>
    private static ChunkStrategy OursLayer(RunContext context, ChunkBoard board, VariantChoice choice, ContextPlan plan, int groupLayers)
    {
        var layerPlan = OursLayerPlan.Predict(board, context.Rates, choice, plan.ChunkTokens, plan.ChunkShape.Layers, groupLayers, context.SharedCores);
        ChunkStrategy strategy = layerPlan.CreateStrategy(board, context.Rates, choice, plan.ChunkTokens, context.SharedCores);
        FetchLog.OursLayerPlan(context.Telemetry.Logger, strategy.Plan, layerPlan.Ours.PredictedSeconds * 1e3, layerPlan.Ours.Chunk,
            layerPlan.OursVariant < 0 ? "none" : board.Ladder[layerPlan.OursVariant].ToString(), layerPlan.Split.PredictedSeconds * 1e3, layerPlan.Split.Chunk,
            layerPlan.Split.Layers, layerPlan.SplitVariant < 0 ? "none" : board.Ladder[layerPlan.SplitVariant].ToString());
        return strategy;
    }

    /// <summary>
    /// The engine's side for one request alone: runs the engine steps (<see cref="NextStep"/>) back to back, waiting (on
    /// the board's events) whenever the strategy leaves the chunk in front of the engine to the fetcher, then writes the
    /// first token's <paramref name="lastLogits"/>.
    /// </summary>
    public async Task ComputeAlongAsync(float[] lastLogits, CancellationToken cancellationToken)
    {
        while (true)
        {
            int version = _strategy?.Board.Version ?? 0;
            EngineStep step = NextStep(int.MaxValue);
            switch (step.Kind)
            {
                case EngineStepKind.Done:
                    return;
                case EngineStepKind.Wait:
                    await _strategy!.Board.WaitForChangeAsync(version, step.Recheck, cancellationToken).ConfigureAwait(false);
                    break;
                case EngineStepKind.ComputeLower:
                    long start = Stopwatch.GetTimestamp();
                    _session.PrefillLowerLayers(_plan.Tokens.AsSpan(step.Start, step.Count), step.Start, step.Layers);
                    Computed(step, Stopwatch.GetElapsedTime(start));
                    break;
                default:
                    long t0 = Stopwatch.GetTimestamp();
                    _session.Prefill(_plan.Tokens.AsSpan(step.Start, step.Count), step.Start, lastLogits);
                    Computed(step, Stopwatch.GetElapsedTime(t0));
                    break;
            }
        }
    }

    /// <summary>
    /// The engine's next step on this request, at most <paramref name="maxTokens"/> prompt tokens: compute a range of the
    /// prompt (then report it with <see cref="Computed"/>), wait for the fetcher (the board's next change, or
    /// <see cref="EngineStep.Recheck"/>), or done (the whole prompt is in the cache and the last step's logits are the
    /// first token's). The walk is the same for a request alone (<see cref="ComputeAlongAsync"/>) and for a request in the
    /// server's continuous batching, whose engine loop interleaves these steps with other requests' under a token budget.
    /// Only the engine's thread calls it.
    /// </summary>
    public EngineStep NextStep(int maxTokens)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTokens, 1);
        if (_next < _rangeEnd)
        {
            return EngineStep.Compute(_next, Math.Min(maxTokens, _rangeEnd - _next));
        }

        if (_suffixStarted)
        {
            return EngineStep.Done;
        }

        int chunkTokens = _plan.ChunkTokens;
        ChunkBoard? board = _strategy?.Board;
        while (_chunk < _suffixFrom)
        {
            int chunk = _chunk;
            if (_frontierSet != chunk)
            {
                board!.SetComputeFrontier(chunk);
                _frontierSet = chunk;
            }

            ChunkState state = board!.StateOf(chunk);
            int lowerLayers = _strategy!.SplitLayersOf(chunk);
            if (lowerLayers > 0 && _lowerComputed != chunk && state is not (ChunkState.Failed or ChunkState.Computing)
                && !(state == ChunkState.Pending && _strategy.IsStopped))
            {
                // Split by layers: the engine computes the lower layers whoever holds the chunk; the fetcher brings the
                // upper ones (the positions are filled once both are in). Should the fetch fail, the chunk is computed whole.
                board.SetEngineComputing(true);
                return EngineStep.ComputeLower(chunk * chunkTokens, chunkTokens, lowerLayers);
            }

            if (state == ChunkState.Filled)
            {
                _chunk++;
                continue;
            }

            EngineMove move = _strategy!.Decide(chunk, state, new FetchProgress(_fetcher!.InFlight, _fetcher.RestoredChunks, board.FetchEnded), out TimeSpan recheck);
            if (move == EngineMove.Wait)
            {
                return EngineStep.Waiting(recheck);
            }

            if (!board.TryMove(chunk, state, ChunkState.Computing))
            {
                continue; // it moved meanwhile: decide again
            }

            int end = chunk + 1;
            if (move == EngineMove.TakeBackRest)
            {
                // The store is slower than predicted: stop fetching and take back everything it has not delivered,
                // to compute it in one pass (one long prefill beats many chunk-sized ones).
                _strategy.TookBack(chunk, _fetcher.RestoredChunks);
                _fetcher.Abandon(chunk);
                _fetcher.StopClaiming();
                end = Take(board, chunk + 1, fromFetcher: true);
                TakenBackChunks += end - chunk;
            }
            else if (_strategy.IsStopped)
            {
                // The fetcher claims no more: the pending chunks from here to the first one it holds are the engine's
                // whatever happens, and one pass over them beats as many chunk-sized ones (a GPU pays per call).
                end = Take(board, chunk + 1, fromFetcher: false);
            }
            else
            {
                // Chunks the fetcher cannot deliver before they are computed join this one in one call.
                end = Take(board, chunk + 1, fromFetcher: false, limit: Math.Min(_strategy.EngineRunEnd(chunk), board.Chunks));
            }

            _republish[chunk] = state == ChunkState.Failed;
            if (end == Stored && end > chunk + 1)
            {
                _suffixFrom = chunk; // computed with the suffix below
                break;
            }

            board.SetEngineComputing(true);
            _rangeEnd = end * chunkTokens;
            _next = chunk * chunkTokens;
            return EngineStep.Compute(_next, Math.Min(maxTokens, _rangeEnd - _next));
        }

        // The rest of the prompt and the first token.
        board?.SetComputeFrontier(Stored);
        _fetcher?.StopClaiming();
        _suffixStarted = true;
        _next = _suffixFrom * chunkTokens;
        _rangeEnd = _plan.Tokens.Length;
        return EngineStep.Compute(_next, Math.Min(maxTokens, _rangeEnd - _next));
    }

    /// <summary>
    /// The engine computed <paramref name="step"/> (from <see cref="NextStep"/>), which took <paramref name="elapsed"/> and
    /// has just ended: the chunks it completed are filled.
    /// </summary>
    public void Computed(EngineStep step, TimeSpan elapsed)
    {
        if (step.Kind == EngineStepKind.ComputeLower)
        {
            _lowerComputed = step.Start / _plan.ChunkTokens;
            _timeline.Add(PrefillStage.Compute, _lowerComputed, null, _timeline.Now - elapsed);
            _strategy!.Board.SetEngineComputing(false);
            return;
        }

        if (step.Kind != EngineStepKind.Compute || step.Start != _next)
        {
            throw new InvalidOperationException($"Computed tokens [{step.Start}, {step.Start + step.Count}) but the engine is at {_next}.");
        }

        int chunkTokens = _plan.ChunkTokens;
        _next += step.Count;
        int firstChunk = step.Start / chunkTokens;
        _timeline.Add(PrefillStage.Compute, _suffixStarted ? -1 : firstChunk, null, _timeline.Now - elapsed);
        if (step.Count == chunkTokens && step.Start % chunkTokens == 0 && !_suffixStarted)
        {
            _context.Rates.ObserveCompute(firstChunk, elapsed.TotalSeconds);
        }

        ChunkBoard? board = _strategy?.Board;
        for (int chunk = firstChunk; chunk < Math.Min(Stored, _next / chunkTokens); chunk++)
        {
            if (board!.StateOf(chunk) == ChunkState.Computing)
            {
                board.Move(chunk, ChunkState.Computing, ChunkState.Filled);
                ComputedChunks++;
            }
        }

        if (_next >= _rangeEnd && !_suffixStarted)
        {
            board!.SetEngineComputing(false);
            _chunk = _rangeEnd / chunkTokens;
        }
    }

    /// <summary>
    /// The server's side: no engine; waits until the fetcher has ended or <paramref name="wait"/> has passed, then stops
    /// it (what was restored by then is kept).
    /// </summary>
    public async Task FetchOffEngineAsync(TimeSpan wait, CancellationToken cancellationToken)
    {
        if (_fetcher is null)
        {
            return;
        }

        try
        {
            await _fetcher.Completion.WaitAsync(wait > TimeSpan.Zero ? wait : TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            DeadlineReached = true;
            _fetcher.StopClaiming(); // disposing cancels the transfers in flight
        }
    }

    /// <summary>Stops the fetcher (transfers in flight are cancelled) and collects what it did.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_fetcher is null)
        {
            return;
        }

        await _fetcher.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>What became of <paramref name="chunk"/>'s fetch (None when the run fetched nothing).</summary>
    public (KvVariant Variant, FetchOutcome Outcome) OutcomeOf(int chunk) => _fetcher?.OutcomeOf(chunk) ?? (default, FetchOutcome.None);

    /// <summary>
    /// Where the two sides met: the first stored chunk the fetcher restored (the engine computed the chunks before it), or
    /// <see cref="Stored"/> when it restored none.
    /// </summary>
    public int MeetingChunk()
    {
        for (int chunk = 0; chunk < Stored; chunk++)
        {
            if (OutcomeOf(chunk).Outcome == FetchOutcome.Restored)
            {
                return chunk;
            }
        }

        return Stored;
    }

    /// <summary>The first chunk restored from a lossy variant (every chunk after it builds on inexact KV), or int.MaxValue.</summary>
    public int FirstLossyRestore()
    {
        for (int chunk = 0; chunk < Stored; chunk++)
        {
            if (_fetcher!.OutcomeOf(chunk) is (KvVariant variant, FetchOutcome.Restored) && !variant.IsLossless)
            {
                return chunk;
            }
        }

        return int.MaxValue;
    }

    /// <summary>
    /// Stores what this request computed, off the response path. KV computed on top of a chunk restored from a lossy
    /// variant is not a full prefill's, so from the first such chunk on nothing is published (it would go under names
    /// that promise exact KV). A stored chunk whose fetch missed is stored again as that variant only, and only if the
    /// store still lacks it: a container that failed verification in transit says nothing about the stored copy (stores
    /// verify on read and remove bad objects themselves), and variants not fetched are left alone. One that arrived
    /// intact but failed its MAC is wrong in the store itself (forged, or sealed under a retired secret) and is replaced.
    /// </summary>
    public int Publish(KvPublisher publisher)
    {
        int queued = 0;
        int lossyFrom = FirstLossyRestore();
        for (int chunk = 0; chunk < Math.Min(_plan.Keys.Length, lossyFrom); chunk++)
        {
            bool enqueued = chunk >= Stored ? publisher.TryEnqueue(_plan, chunk, _session.Cache)
                : _republish[chunk] && _fetcher!.OutcomeOf(chunk) is (KvVariant missing, FetchOutcome.Missing) ? publisher.TryEnqueueMissing(_plan, chunk, _session.Cache, missing)
                : _republish[chunk] && _fetcher!.OutcomeOf(chunk) is (KvVariant unauthentic, FetchOutcome.Unauthentic) && publisher.TryEnqueueReplacing(_plan, chunk, _session.Cache, unauthentic);
            queued += enqueued ? 1 : 0;
        }

        return queued;
    }

    /// <summary>What the prefill did, once it has run and been disposed.</summary>
    public PrefillReport ToPrefillReport(PrefillStrategy strategy, TimeSpan timeToFirstToken, int firstToken)
    {
        StageSpan[] spans = _timeline.ToArray();
        return new PrefillReport
        {
            Strategy = strategy.ToString(),
            PromptTokens = _plan.Tokens.Length,
            StoredChunks = Stored,
            RestoredChunks = RestoredChunks,
            FailedChunks = FailedChunks,
            TakenBackChunks = TakenBackChunks,
            ReusedTokens = RestoredChunks * _plan.ChunkTokens,
            ComputedTokens = _plan.Tokens.Length - (RestoredChunks * _plan.ChunkTokens),
            BytesFetched = BytesFetched,
            Plan = Plan,
            SplitChunk = SplitChunk,
            SplitLayers = SplitLayers,
            LookupFailed = LookupFailed,
            TimeToFirstToken = timeToFirstToken,
            FirstToken = firstToken,
            Variants = RestoredPerVariant(spans),
            Fallbacks = FallbackReasons(),
            Timeline = spans,
        };
    }

    /// <summary>What the off-engine fetch did, once it has run and been disposed.</summary>
    public RestoreReport ToRestoreReport(TimeSpan elapsed)
    {
        var unauthentic = new Dictionary<int, KvVariant>();
        for (int chunk = 0; chunk < Stored; chunk++)
        {
            if (_fetcher!.OutcomeOf(chunk) is (KvVariant variant, FetchOutcome.Unauthentic))
            {
                unauthentic[chunk] = variant;
            }
        }

        return new RestoreReport
        {
            PromptTokens = _plan.Tokens.Length,
            StoredChunks = Stored,
            RestoredChunks = RestoredChunks,
            FailedChunks = FailedChunks,
            ReusedTokens = _session.Cache.Length,
            BytesFetched = BytesFetched,
            LookupFailed = LookupFailed,
            RestoredLossy = _fetcher is not null && FirstLossyRestore() < Stored,
            DeadlineReached = DeadlineReached,
            UnauthenticChunks = unauthentic,
            Fallbacks = FallbackReasons(),
            Elapsed = elapsed,
            Timeline = _timeline.ToArray(),
        };
    }

    /// <inheritdoc cref="ChunkStrategy.Plan"/>
    public string? Plan => _strategy?.Plan;

    /// <summary>The chunk split by layers (the engine computed its lower layers, the fetcher restored the upper ones), or -1.</summary>
    public int SplitChunk => SplitRestored() ? _lowerComputed : -1;

    /// <summary>The lower layers the engine computed of <see cref="SplitChunk"/>; 0 when no chunk was split.</summary>
    public int SplitLayers => SplitRestored() ? _strategy!.SplitLayersOf(_lowerComputed) : 0;

    /// <summary>Whether a chunk was split by layers: the engine computed its lower layers and the fetcher restored the upper ones.</summary>
    private bool SplitRestored() => _lowerComputed >= 0 && OutcomeOf(_lowerComputed).Outcome == FetchOutcome.Restored;

    /// <summary>Stored chunks whose fetch failed, by reason (see <see cref="ReuseTelemetry.ReasonOf"/>).</summary>
    private Dictionary<string, int> FallbackReasons()
    {
        var reasons = new Dictionary<string, int>();
        for (int chunk = 0; _fetcher is not null && chunk < Stored; chunk++)
        {
            FetchOutcome outcome = _fetcher.OutcomeOf(chunk).Outcome;
            if (outcome is not (FetchOutcome.None or FetchOutcome.Restored))
            {
                string reason = ReuseTelemetry.ReasonOf(outcome);
                reasons[reason] = reasons.GetValueOrDefault(reason) + 1;
            }
        }

        return reasons;
    }

    /// <summary>Chunks restored per variant, from the restore spans.</summary>
    internal static Dictionary<string, int> RestoredPerVariant(IEnumerable<StageSpan> spans) =>
        spans.Where(s => s.Stage == PrefillStage.Restore && s.Variant is not null).GroupBy(s => s.Variant!).ToDictionary(g => g.Key, g => g.Count());

    /// <summary>
    /// Takes chunks [<paramref name="from"/>, …) for the engine: the pending and failed ones, and with
    /// <paramref name="fromFetcher"/> those the fetcher is fetching too (abandoned there), up to the first one that is
    /// filled or being restored (the restorer writes it into the cache now), or, without it, in the fetcher's hands;
    /// and not past <paramref name="limit"/>; returns the end of the taken range.
    /// </summary>
    private int Take(ChunkBoard board, int from, bool fromFetcher, int limit = int.MaxValue)
    {
        int end = from;
        for (; end < Math.Min(limit, board.Chunks); end++)
        {
            ChunkState state = board.StateOf(end);
            bool takable = state is ChunkState.Pending or ChunkState.Failed || (fromFetcher && state == ChunkState.Fetching);
            if (!takable || !board.TryMove(end, state, ChunkState.Computing))
            {
                break;
            }

            if (state == ChunkState.Fetching)
            {
                _fetcher!.Abandon(end);
            }

            _republish[end] = state == ChunkState.Failed;
        }

        return end;
    }

    private static async Task<Lookup> LookupAsync(RunContext context, ContextPlan plan, IReadOnlyList<KvVariant> ladder, Timeline timeline, CancellationToken cancellationToken)
    {
        TimeSpan start = timeline.Now;
        int chunks = plan.ReusableChunks;
        var keys = new ObjectKey[chunks * ladder.Count];
        for (int chunk = 0; chunk < chunks; chunk++)
        {
            for (int v = 0; v < ladder.Count; v++)
            {
                keys[(chunk * ladder.Count) + v] = plan.ObjectKeyOf(chunk, ladder[v]);
            }
        }

        bool[] exists;
        try
        {
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            deadline.CancelAfter(context.LookupDeadline);
            exists = await context.Store.ExistsAsync(keys, deadline.Token).ConfigureAwait(false);
        }
        catch (KvStoreException ex)
        {
            FetchLog.LookupFailed(context.Telemetry.Logger, chunks, ex.Message);
            timeline.Add(PrefillStage.Lookup, -1, null, start);
            return new Lookup(0, [], true);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            FetchLog.LookupFailed(context.Telemetry.Logger, chunks, $"no answer within {context.LookupDeadline.TotalMilliseconds:0} ms");
            timeline.Add(PrefillStage.Lookup, -1, null, start);
            return new Lookup(0, [], true);
        }

        var available = new int[chunks];
        int stored = 0;
        while (stored < chunks)
        {
            for (int v = 0; v < ladder.Count; v++)
            {
                if (exists[(stored * ladder.Count) + v])
                {
                    available[stored] |= 1 << v;
                }
            }

            if (available[stored] == 0)
            {
                break;
            }

            stored++;
        }

        timeline.Add(PrefillStage.Lookup, -1, null, start);
        return new Lookup(stored, available[..stored], false);
    }

    private readonly record struct Lookup(int Stored, int[] Available, bool Failed);
}
