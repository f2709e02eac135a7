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
    }

    /// <summary>Chunks of the prompt found in the store (the longest stored prefix).</summary>
    public int Stored { get; }

    public bool LookupFailed { get; }

    public int RestoredChunks { get; private set; }

    public int FailedChunks { get; private set; }

    public long BytesFetched { get; private set; }

    /// <summary>Chunks the engine took back from the fetcher.</summary>
    public int TakenBackChunks { get; private set; }

    /// <summary>The off-engine wait reached its deadline.</summary>
    public bool DeadlineReached { get; private set; }

    /// <summary>
    /// Resets <paramref name="session"/>, looks up which of <paramref name="ladder"/>'s variants of the plan's chunks are
    /// stored (none when the ladder is empty), and when some are, starts fetching them by <paramref name="mode"/>.
    /// </summary>
    public static async Task<PrefillRun> StartAsync(RunContext context, IInferenceSession session, ContextPlan plan, IReadOnlyList<KvVariant> ladder,
        PrefillMode mode, bool pipelined, long startTimestamp, CancellationToken cancellationToken)
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

        var board = new ChunkBoard(lookup.Stored, ladder, lookup.Available);
        var choice = new VariantChoice(context.Rates, plan.ChunkBytes, context.Choice);
        ChunkStrategy strategy = mode switch
        {
            PrefillMode.FetchOnly => new FetchOnlyStrategy(board, ladder.Count > 1 ? choice : null),
            PrefillMode.Cake => new CakeStrategy(board),
            PrefillMode.Adaptive => new AdaptiveStrategy(board, context.Rates, choice, plan.ChunkTokens, context.SharedCores),
            _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, "This mode fetches nothing."),
        };
        FetcherOptions fetcherOptions = pipelined ? context.Fetcher : context.Fetcher.Sequential;
        var fetcher = new ChunkFetcher(plan, context.Store, session.Cache, context.Restorer, context.Rates, fetcherOptions, strategy, context.SharedCores, timeline, context.Telemetry,
            fetcherOptions.Slots(plan.ChunkBytes, pipelined), cancellationToken);
        return new PrefillRun(context, session, plan, timeline, lookup, strategy, fetcher);
    }

    /// <summary>
    /// The engine's side: walks the stored prefix front to back, computing what the strategy gives it and waiting (on the
    /// board's events) for what the fetcher delivers, then computes the rest of the prompt and the first token's
    /// <paramref name="lastLogits"/>.
    /// </summary>
    public async Task ComputeAlongAsync(float[] lastLogits, CancellationToken cancellationToken)
    {
        int chunkTokens = _plan.ChunkTokens;
        int suffixFrom = Stored;
        ChunkBoard? board = _strategy?.Board;
        for (int chunk = 0; chunk < suffixFrom; chunk++)
        {
            board!.SetComputeFrontier(chunk);
            while (true)
            {
                int version = board.Version;
                ChunkState state = board.StateOf(chunk);
                if (state == ChunkState.Filled)
                {
                    break;
                }

                EngineMove move = _strategy!.Decide(chunk, state, new FetchProgress(_fetcher!.InFlight, _fetcher.RestoredChunks, board.FetchEnded), out TimeSpan recheck);
                if (move == EngineMove.Wait)
                {
                    await board.WaitForChangeAsync(version, recheck, cancellationToken).ConfigureAwait(false);
                    continue;
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
                    end = TakeBackRest(board, chunk + 1);
                    TakenBackChunks += end - chunk;
                }

                _republish[chunk] = state == ChunkState.Failed;
                if (end == Stored && end > chunk + 1)
                {
                    suffixFrom = chunk; // computed with the suffix below
                    break;
                }

                board.SetEngineComputing(true);
                if (end == chunk + 1)
                {
                    ComputeChunk(chunk, lastLogits);
                }
                else
                {
                    TimeSpan rangeStart = _timeline.Now;
                    _session.Prefill(_plan.Tokens.AsSpan(chunk * chunkTokens, (end - chunk) * chunkTokens), chunk * chunkTokens, lastLogits);
                    _timeline.Add(PrefillStage.Compute, chunk, null, rangeStart);
                }

                board.SetEngineComputing(false);
                for (int filled = chunk; filled < end; filled++)
                {
                    board.Move(filled, ChunkState.Computing, ChunkState.Filled);
                }

                chunk = end - 1;
                break;
            }
        }

        board?.SetComputeFrontier(Stored);
        _fetcher?.StopClaiming();

        // The rest of the prompt and the first token.
        int start = suffixFrom * chunkTokens;
        TimeSpan suffixStart = _timeline.Now;
        _session.Prefill(_plan.Tokens.AsSpan(start), start, lastLogits);
        _timeline.Add(PrefillStage.Compute, -1, null, suffixStart);
        for (int filled = suffixFrom; filled < Stored; filled++)
        {
            board!.Move(filled, ChunkState.Computing, ChunkState.Filled);
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
        RestoredChunks = _fetcher.RestoredChunks;
        FailedChunks = _fetcher.FailedChunks;
        BytesFetched = _fetcher.BytesFetched;
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
    public void Publish(KvPublisher publisher)
    {
        int lossyFrom = FirstLossyRestore();
        for (int chunk = 0; chunk < Math.Min(_plan.Keys.Length, lossyFrom); chunk++)
        {
            if (chunk >= Stored)
            {
                publisher.TryEnqueue(_plan, chunk, _session.Cache);
            }
            else if (_republish[chunk] && _fetcher!.OutcomeOf(chunk) is (KvVariant missing, FetchOutcome.Missing))
            {
                publisher.TryEnqueueMissing(_plan, chunk, _session.Cache, missing);
            }
            else if (_republish[chunk] && _fetcher!.OutcomeOf(chunk) is (KvVariant unauthentic, FetchOutcome.Unauthentic))
            {
                publisher.TryEnqueueReplacing(_plan, chunk, _session.Cache, unauthentic);
            }
        }
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
    /// Takes chunks [<paramref name="from"/>, …) back from the fetcher for the engine, up to the first one that is filled
    /// or being restored (the restorer writes it into the cache now); returns the end of the taken range.
    /// </summary>
    private int TakeBackRest(ChunkBoard board, int from)
    {
        int end = from;
        for (; end < board.Chunks; end++)
        {
            ChunkState state = board.StateOf(end);
            if (state is not (ChunkState.Pending or ChunkState.Fetching or ChunkState.Failed) || !board.TryMove(end, state, ChunkState.Computing))
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

    private void ComputeChunk(int chunk, float[] logits)
    {
        TimeSpan start = _timeline.Now;
        long t0 = Stopwatch.GetTimestamp();
        int first = chunk * _plan.ChunkTokens;
        _session.Prefill(_plan.Tokens.AsSpan(first, _plan.ChunkTokens), first, logits);
        _context.Rates.ObserveCompute(chunk, Stopwatch.GetElapsedTime(t0).TotalSeconds);
        _timeline.Add(PrefillStage.Compute, chunk, null, start);
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
