using System.Diagnostics;
using KvFetcher.Engine;
using KvFetcher.Fetch.Fetching;
using KvFetcher.Fetch.Publishing;
using KvFetcher.Fetch.Restoring;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Store;

namespace KvFetcher.Fetch;

/// <summary>
/// Remote KV reuse for one model and one store: a prefill looks up the longest stored prefix of the prompt, obtains it by
/// the chosen <see cref="PrefillStrategy"/> (computing, fetching, or both meeting in the middle), computes the rest and
/// the first token, then stores the chunks it computed in the background. The answer never depends on the store: a
/// chunk that cannot be fetched and verified in time is computed, and a store that is down only turns hits into
/// computation.
/// </summary>
public sealed class KvReuse : IAsyncDisposable
{
    private readonly IInferenceModel _model;

    /// <param name="model">The engine's model (its KV storage dtype is the dtype chunks are stored in).</param>
    /// <param name="store">Where chunks live.</param>
    /// <param name="options">Chunking, ladder, deadlines.</param>
    /// <param name="rates">Measured rates to start from (shared by several instances over one engine); a new set by default.</param>
    /// <param name="restorer">How fetched chunks are decoded into the engine's cache; the CPU decoders by default.</param>
    public KvReuse(IInferenceModel model, IKvStore store, ReuseOptions? options = null, FetchRates? rates = null, IChunkRestorer? restorer = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(store);
        options ??= new ReuseOptions();
        options.Validate();

        // Variants whose codec cannot run here (e.g. the video shim is missing) are left out, with one warning line.
        IReadOnlyList<KvVariant> usable = UsableLadder.Of(options.Ladder, out string? warning);
        if (usable.Count == 0)
        {
            throw new ArgumentException($"No variant of the ladder can be used here: {warning}", nameof(options));
        }

        _model = model;
        Store = store;
        Options = warning is null ? options : options with { Ladder = usable };
        LadderWarning = warning;
        Publisher = new KvPublisher(store, options.Ladder, workers: Options.PublishWorkers, options: Options.Publishing);
        Rates = rates ?? new FetchRates();
        Restorer = restorer ?? HostChunkRestorer.Instance;
    }

    public IKvStore Store { get; }

    public ReuseOptions Options { get; }

    /// <summary>One line naming the variants left out of the ladder because their codec cannot run here, or null.</summary>
    public string? LadderWarning { get; }

    /// <summary>Rates measured so far (they drive the adaptive strategy's predictions).</summary>
    public FetchRates Rates { get; }

    public KvPublisher Publisher { get; }

    /// <summary>How fetched chunks are decoded and restored into the engine's cache.</summary>
    public IChunkRestorer Restorer { get; }

    /// <summary>The chunk keys of a prompt under this model and tenant.</summary>
    public ContextPlan Plan(int[] tokens) => Plan(tokens, Options.TenantSalt);

    /// <summary>
    /// The chunk keys of a prompt under this model and <paramref name="tenantSalt"/>, for one instance serving many
    /// tenants (a server salts each request with its caller's tenant; <see cref="ReuseOptions.TenantSalt"/> is ignored).
    /// </summary>
    public ContextPlan Plan(int[] tokens, string tenantSalt) =>
        ContextPlan.Create(_model.Fingerprint, tenantSalt, tokens, Options.ChunkTokens, _model.Config.NumLayers, _model.Config.NumKvHeads,
            _model.Config.HeadDim, _model.KvStorageDType, Options.Authenticator);

    /// <summary>
    /// Prefills <paramref name="tokens"/> into <paramref name="session"/> (which is reset first) and writes the last
    /// token's logits to <paramref name="lastLogits"/>. With <paramref name="publish"/>, chunks computed here are stored
    /// afterwards in the background.
    /// </summary>
    public async Task<PrefillReport> PrefillAsync(IInferenceSession session, int[] tokens, PrefillStrategy strategy, float[] lastLogits,
        bool publish = true, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(strategy);
        ArgumentNullException.ThrowIfNull(lastLogits);
        if (session.Model != _model)
        {
            throw new ArgumentException("The session belongs to another model.", nameof(session));
        }

        long t0 = Stopwatch.GetTimestamp();
        ContextPlan plan = Plan(tokens);
        session.Reset();
        int chunkTokens = plan.ChunkTokens;
        var timeline = new Timeline((plan.ReusableChunks * 5) + 8, t0);
        IReadOnlyList<KvVariant> ladder = LadderFor(strategy);

        // 1. Lookup: which variants of which chunks are stored, in one round trip.
        (int stored, int[] available, bool lookupFailed) = strategy.Mode == PrefillMode.ComputeOnly || plan.ReusableChunks == 0
            ? (0, [], false)
            : await LookupAsync(plan, ladder, timeline, cancellationToken).ConfigureAwait(false);

        var prefix = new PrefixState(stored, ladder, available);
        var republish = new bool[stored];
        using var progress = new SemaphoreSlim(0);
        ChunkFetcher? fetcher = null;
        IFetchPolicy? policy = null;
        if (stored > 0)
        {
            policy = strategy.Mode switch
            {
                PrefillMode.FetchOnly => new FetchAllPolicy(prefix, 0),
                PrefillMode.Cake => new MeetInMiddlePolicy(prefix, 0),
                _ => new AdaptivePolicy(prefix, Rates, plan, Options, _model.ComputesOnHostCores),
            };
            int slots = strategy.Pipelined ? (int)Math.Clamp(Options.MaxBufferedBytes / (3L * plan.ChunkBytes), 2, 16) : 1;
            ReuseOptions options = strategy.Pipelined ? Options : Options with { TransfersInFlight = 1 };

            // Ours decides before the fetcher starts whether the engine computes chunk 0 or waits for the fetch, so a fast
            // fetcher cannot reach the front before the decision is made.
            (policy as AdaptivePolicy)?.EngineShouldWait(0);
            fetcher = new ChunkFetcher(plan, Store, session.Cache, Restorer, Rates, options, policy, prefix.States, timeline, progress, slots, cancellationToken);
            // Decode and restore rates are kept apart for when the engine computes on the same cores and when it does not.
            bool shared = _model.ComputesOnHostCores;
            fetcher.EngineBusy = () => shared && prefix.EngineBusy;
            if (policy is AdaptivePolicy adaptive)
            {
                ChunkFetcher started = fetcher;
                adaptive.InFlight = () => started.InFlight;
            }
        }

        int restored = 0, failed = 0, takenBack = 0;
        long bytes = 0;
        var adaptivePolicy = policy as AdaptivePolicy;
        try
        {
            // 2. The engine walks the stored prefix front to back, computing what nobody else has.
            int suffixFrom = stored;
            for (int chunk = 0; chunk < suffixFrom; chunk++)
            {
                prefix.SetComputeFrontier(chunk);
                while (true)
                {
                    ChunkState state = prefix.StateOf(chunk);
                    if (state == ChunkState.Filled)
                    {
                        break;
                    }

                    bool engineComputes = state == ChunkState.Failed || strategy.Mode switch
                    {
                        PrefillMode.FetchOnly => fetcher!.Completion.IsCompleted,
                        PrefillMode.Adaptive => fetcher!.Completion.IsCompleted || !((AdaptivePolicy)policy!).EngineShouldWait(chunk),
                        _ => true,
                    };
                    // Cake as published: the engine checks whether its next chunk is loaded and computes it if not,
                    // even while it is in flight (that transfer is wasted). Ours waits for a chunk it let the fetcher take.
                    bool cakeTakesOver = strategy.Mode == PrefillMode.Cake && state == ChunkState.Fetching;
                    // Ours waits for a chunk only until the fetcher is clearly later than predicted (never longer than
                    // computing the chunk takes), then takes it back; the restore stage drops its data if it comes.
                    bool takeBack = adaptivePolicy is not null && (state == ChunkState.Fetching || (state == ChunkState.Pending && !engineComputes))
                        && adaptivePolicy.PatienceExhausted(chunk, fetcher!.RestoredChunks);
                    if ((state is ChunkState.Pending or ChunkState.Failed && engineComputes || cakeTakesOver || takeBack) && prefix.TryTake(chunk, state, ChunkState.Computing))
                    {
                        int end = chunk + 1;
                        if (takeBack)
                        {
                            // The store is slower than predicted: stop fetching and take back everything it has not
                            // delivered, to compute it in one pass (one long prefill beats many chunk-sized ones).
                            adaptivePolicy!.TookBack(chunk, fetcher!.RestoredChunks);
                            fetcher.Abandon(chunk);
                            fetcher.StopClaiming();
                            end = TakeBackRest(prefix, fetcher, chunk + 1, republish);
                            takenBack += end - chunk;
                        }

                        republish[chunk] = state == ChunkState.Failed;
                        if (end == stored && end > chunk + 1)
                        {
                            suffixFrom = chunk; // computed with the suffix below
                            break;
                        }

                        prefix.EngineBusy = true;
                        if (end == chunk + 1)
                        {
                            Compute(session, plan, chunk, lastLogits, timeline);
                        }
                        else
                        {
                            TimeSpan rangeStart = timeline.Now;
                            session.Prefill(tokens.AsSpan(chunk * chunkTokens, (end - chunk) * chunkTokens), chunk * chunkTokens, lastLogits);
                            timeline.Add(PrefillStage.Compute, chunk, null, rangeStart);
                        }

                        prefix.EngineBusy = false;
                        for (int filled = chunk; filled < end; filled++)
                        {
                            Volatile.Write(ref prefix.States[filled], (int)ChunkState.Filled);
                        }

                        chunk = end - 1;
                        break;
                    }

                    // Fetching or restoring (or, fetch-only, not claimed yet): wait for the fetcher to settle it.
                    await progress.WaitAsync(20, cancellationToken).ConfigureAwait(false);
                }
            }

            prefix.SetComputeFrontier(stored);
            fetcher?.StopClaiming();

            // 3. The rest of the prompt and the first token.
            int start = suffixFrom * chunkTokens;
            TimeSpan suffixStart = timeline.Now;
            session.Prefill(tokens.AsSpan(start), start, lastLogits);
            timeline.Add(PrefillStage.Compute, -1, null, suffixStart);
        }
        finally
        {
            if (fetcher is not null)
            {
                await fetcher.DisposeAsync().ConfigureAwait(false);
                restored = fetcher.RestoredChunks;
                failed = fetcher.FailedChunks;
                bytes = fetcher.BytesFetched;
            }
        }

        TimeSpan ttft = Stopwatch.GetElapsedTime(t0);
        int first = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(lastLogits.AsSpan(0, _model.Config.VocabSize));

        // 4. Store what this request computed, off the response path. KV computed on top of a chunk restored from a
        // lossy variant is not a full prefill's, so from the first such chunk on nothing is published (it would go under
        // names that promise exact KV). A stored chunk whose fetch missed is stored again as that variant only, and only
        // if the store still lacks it: a container that failed verification in transit says nothing about the stored
        // copy (stores verify on read and remove bad objects themselves), and variants not fetched are left alone. One
        // that arrived intact but failed its MAC is wrong in the store itself (forged, or sealed under a retired secret)
        // and is replaced.
        if (publish)
        {
            int lossyFrom = fetcher is null ? int.MaxValue : FirstLossyRestore(fetcher, stored);
            for (int chunk = 0; chunk < Math.Min(plan.Keys.Length, lossyFrom); chunk++)
            {
                if (chunk >= stored)
                {
                    Publisher.TryEnqueue(plan, chunk, session.Cache);
                }
                else if (republish[chunk] && fetcher!.OutcomeOf(chunk) is (KvVariant missing, FetchOutcome.Missing))
                {
                    Publisher.TryEnqueueMissing(plan, chunk, session.Cache, missing);
                }
                else if (republish[chunk] && fetcher!.OutcomeOf(chunk) is (KvVariant unauthentic, FetchOutcome.Unauthentic))
                {
                    Publisher.TryEnqueueReplacing(plan, chunk, session.Cache, unauthentic);
                }
            }
        }

        StageSpan[] spans = timeline.ToArray();
        return new PrefillReport
        {
            Strategy = strategy.ToString(),
            PromptTokens = tokens.Length,
            StoredChunks = stored,
            RestoredChunks = restored,
            FailedChunks = failed,
            TakenBackChunks = takenBack,
            ReusedTokens = restored * chunkTokens,
            ComputedTokens = tokens.Length - (restored * chunkTokens),
            BytesFetched = bytes,
            LookupFailed = lookupFailed,
            TimeToFirstToken = ttft,
            FirstToken = first,
            Variants = spans.Where(s => s.Stage == PrefillStage.Restore && s.Variant is not null).GroupBy(s => s.Variant!).ToDictionary(g => g.Key, g => g.Count()),
            Timeline = spans,
        };
    }

    /// <summary>
    /// Stores <paramref name="tokens"/> ahead of time (what <c>kvfetch warm</c> does): prefills them, reusing what is
    /// stored already, and returns once every chunk it computed is stored (or failed to be, see <see cref="Publisher"/>).
    /// </summary>
    public async Task<PrefillReport> WarmAsync(int[] tokens, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        using IInferenceSession session = _model.CreateSession(tokens.Length);
        PrefillReport report = await PrefillAsync(session, tokens, PrefillStrategy.Adaptive, new float[_model.Config.VocabSize],
            publish: true, cancellationToken).ConfigureAwait(false);
        await Publisher.WhenIdleAsync().ConfigureAwait(false);
        return report;
    }

    /// <summary>
    /// Fetches the stored prefix of <paramref name="tokens"/> as <paramref name="variant"/> into <paramref name="session"/>
    /// (reset first) without using the engine, for a scheduler that computes other requests meanwhile. Returns the
    /// tokens now filled from position 0 (<see cref="IKvCache.Length"/>); the caller computes the rest from there.
    /// </summary>
    public async Task<int> RestoreAsync(IInferenceSession session, int[] tokens, KvVariant variant, CancellationToken cancellationToken = default) =>
        (await FetchPrefixAsync(session, Plan(tokens), variant, cancellationToken).ConfigureAwait(false)).ReusedTokens;

    /// <summary>
    /// Fetches the stored prefix of <paramref name="plan"/> as <paramref name="variant"/> into <paramref name="session"/>
    /// (reset first) without using the engine, and reports what it did. Positions [0, <see cref="RestoreReport.ReusedTokens"/>)
    /// are filled afterwards; the caller computes the rest from there (and may publish the chunks it computes through
    /// <see cref="Publisher"/>). A store that is down or slow only shortens the reused prefix.
    /// </summary>
    public Task<RestoreReport> FetchPrefixAsync(IInferenceSession session, ContextPlan plan, KvVariant variant, CancellationToken cancellationToken = default) =>
        FetchPrefixAsync(session, plan, [variant], cancellationToken);

    /// <summary>
    /// Like <see cref="FetchPrefixAsync(IInferenceSession, ContextPlan, KvVariant, CancellationToken)"/>, fetching each
    /// chunk as whichever of <paramref name="ladder"/>'s stored variants is predicted to arrive fastest from the rates
    /// measured so far (the most accurate within <see cref="ReuseOptions.QualitySlack"/> of it): a request adapts to the
    /// link and the decoders it meets.
    /// </summary>
    public async Task<RestoreReport> FetchPrefixAsync(IInferenceSession session, ContextPlan plan, IReadOnlyList<KvVariant> ladder, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(ladder);
        if (ladder.Count is 0 or > 30)
        {
            throw new ArgumentException($"A ladder holds 1 to 30 variants; got {ladder.Count}.", nameof(ladder));
        }

        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(plan);
        if (session.Model != _model)
        {
            throw new ArgumentException("The session belongs to another model.", nameof(session));
        }

        long t0 = Stopwatch.GetTimestamp();
        session.Reset();
        var timeline = new Timeline((plan.ReusableChunks * 5) + 8, t0);
        (int stored, int[] available, bool lookupFailed) = plan.ReusableChunks == 0 ? (0, [], false) : await LookupAsync(plan, ladder, timeline, cancellationToken).ConfigureAwait(false);
        int restored = 0, failed = 0;
        long bytes = 0;
        bool lossy = false;
        bool deadlineReached = false;
        IReadOnlyDictionary<int, KvVariant> unauthentic = new Dictionary<int, KvVariant>();
        if (stored > 0)
        {
            var prefix = new PrefixState(stored, ladder, available);
            using var progress = new SemaphoreSlim(0);
            int slots = (int)Math.Clamp(Options.MaxBufferedBytes / (3L * plan.ChunkBytes), 2, 16);
            Func<int, int, int>? choose = ladder.Count > 1 ? new FastestVariant(prefix, Rates, plan, Options).Choose : null;
            var fetcher = new ChunkFetcher(plan, Store, session.Cache, Restorer, Rates, Options, new FetchAllPolicy(prefix, 0, choose), prefix.States, timeline, progress, slots, cancellationToken);
            try
            {
                // The request waits at most about as long as computing the prefix would take (PrefixWaitFactor times
                // the prediction); then it keeps what arrived and the engine computes the rest.
                TimeSpan wait = PrefixWait(plan, stored) - Stopwatch.GetElapsedTime(t0);
                try
                {
                    await fetcher.Completion.WaitAsync(wait > TimeSpan.Zero ? wait : TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    deadlineReached = true;
                    fetcher.StopClaiming(); // disposing cancels the transfers in flight
                }
            }
            finally
            {
                await fetcher.DisposeAsync().ConfigureAwait(false);
                restored = fetcher.RestoredChunks;
                failed = fetcher.FailedChunks;
                bytes = fetcher.BytesFetched;
                lossy = FirstLossyRestore(fetcher, stored) < stored;
                unauthentic = Unauthentic(fetcher, stored);
            }
        }

        return new RestoreReport
        {
            PromptTokens = plan.Tokens.Length,
            StoredChunks = stored,
            RestoredChunks = restored,
            FailedChunks = failed,
            ReusedTokens = session.Cache.Length,
            BytesFetched = bytes,
            LookupFailed = lookupFailed,
            RestoredLossy = lossy,
            DeadlineReached = deadlineReached,
            UnauthenticChunks = unauthentic,
            Elapsed = Stopwatch.GetElapsedTime(t0),
            Timeline = timeline.ToArray(),
        };
    }

    public async ValueTask DisposeAsync() => await Publisher.DisposeAsync().ConfigureAwait(false);

    private IReadOnlyList<KvVariant> LadderFor(PrefillStrategy strategy) => strategy.Mode switch
    {
        PrefillMode.ComputeOnly => [],
        PrefillMode.Adaptive => Options.LosslessOnly ? [.. Options.Ladder.Where(v => v.IsLossless)] : Options.Ladder,
        _ => [strategy.Variant ?? throw new ArgumentException($"Strategy {strategy.Mode} needs a variant.", nameof(strategy))],
    };

    private async Task<(int Stored, int[] Available, bool Failed)> LookupAsync(ContextPlan plan, IReadOnlyList<KvVariant> ladder, Timeline timeline, CancellationToken cancellationToken)
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
            deadline.CancelAfter(Options.LookupTimeout < Options.ChunkTimeout ? Options.LookupTimeout : Options.ChunkTimeout);
            exists = await Store.ExistsAsync(keys, deadline.Token).ConfigureAwait(false);
        }
        catch (KvStoreException)
        {
            timeline.Add(PrefillStage.Lookup, -1, null, start);
            return (0, [], true);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            timeline.Add(PrefillStage.Lookup, -1, null, start);
            return (0, [], true);
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
        return (stored, available[..stored], false);
    }

    /// <summary>The chunks whose fetched variant failed its MAC (the stored copy is wrong and is to be replaced).</summary>
    private static Dictionary<int, KvVariant> Unauthentic(ChunkFetcher fetcher, int stored)
    {
        var chunks = new Dictionary<int, KvVariant>();
        for (int chunk = 0; chunk < stored; chunk++)
        {
            if (fetcher.OutcomeOf(chunk) is (KvVariant variant, FetchOutcome.Unauthentic))
            {
                chunks[chunk] = variant;
            }
        }

        return chunks;
    }

    /// <summary>The first chunk the fetcher restored from a lossy variant (every chunk after it builds on inexact KV), or int.MaxValue.</summary>
    private static int FirstLossyRestore(ChunkFetcher fetcher, int stored)
    {
        for (int chunk = 0; chunk < stored; chunk++)
        {
            if (fetcher.OutcomeOf(chunk) is (KvVariant variant, FetchOutcome.Restored) && !variant.IsLossless)
            {
                return chunk;
            }
        }

        return int.MaxValue;
    }

    /// <summary>
    /// Takes chunks [<paramref name="from"/>, …) back from the fetcher for the engine, up to the first one that is filled
    /// or being restored (the restorer writes it into the cache now); returns the end of the taken range.
    /// </summary>
    private static int TakeBackRest(PrefixState prefix, ChunkFetcher fetcher, int from, bool[] republish)
    {
        int end = from;
        for (; end < prefix.Chunks; end++)
        {
            ChunkState state = prefix.StateOf(end);
            if (state is not (ChunkState.Pending or ChunkState.Fetching or ChunkState.Failed) || !prefix.TryTake(end, state, ChunkState.Computing))
            {
                break;
            }

            if (state == ChunkState.Fetching)
            {
                fetcher.Abandon(end);
            }

            republish[end] = state == ChunkState.Failed;
        }

        return end;
    }

    /// <summary>How long a request off the engine waits for its <paramref name="stored"/> chunks: the predicted compute time of them, scaled.</summary>
    private TimeSpan PrefixWait(ContextPlan plan, int stored)
    {
        double seconds = 0;
        for (int chunk = 0; chunk < stored; chunk++)
        {
            seconds += Rates.ComputeSeconds(chunk, plan.ChunkTokens);
        }

        return TimeSpan.FromSeconds(Math.Max(0.25, seconds * Options.PrefixWaitFactor));
    }

    private void Compute(IInferenceSession session, ContextPlan plan, int chunk, float[] logits, Timeline timeline)
    {
        TimeSpan start = timeline.Now;
        long t0 = Stopwatch.GetTimestamp();
        int first = chunk * plan.ChunkTokens;
        session.Prefill(plan.Tokens.AsSpan(first, plan.ChunkTokens), first, logits);
        Rates.ObserveCompute(chunk, Stopwatch.GetElapsedTime(t0).TotalSeconds);
        timeline.Add(PrefillStage.Compute, chunk, null, start);
    }
}
