using System.Collections.Concurrent;
using System.Diagnostics;
using KvFetcher.Engine;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Scheduling;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvFetcher.Serving.Scheduling;

/// <summary>How an <see cref="EngineScheduler"/> bounds and slices its work.</summary>
public sealed record EngineSchedulerOptions
{
    /// <summary>Requests holding a session (fetching, prefilling or decoding) at once.</summary>
    public int MaxActiveSessions { get; init; } = 8;

    /// <summary>Also store the chunks a finished answer completes, for the next turn of the conversation.</summary>
    public bool PublishAnswers { get; init; } = true;

    /// <summary>Requests waiting for a session; beyond this <see cref="EngineScheduler.Submit"/> throws <see cref="EngineBusyException"/>.</summary>
    public int MaxQueuedRequests { get; init; } = 64;

    /// <summary>
    /// The token budget of one engine iteration: one token per decoding request first, then prompt slices of requests
    /// without stored context, then the compute side of reuse requests (Cake's priority). It is also the most prompt
    /// tokens one iteration computes for one request.
    /// </summary>
    public int PrefillStepTokens { get; init; } = 256;

    /// <summary>
    /// How a request with a stored prefix obtains it: <see cref="PrefillMode.Adaptive"/> (ours, the default) and
    /// <see cref="PrefillMode.Cake"/> compute its front in the engine's iterations while the fetcher restores its back;
    /// <see cref="PrefillMode.FetchOnly"/> is the waiting queue (the whole prefix is fetched off the engine, then the rest
    /// is computed). A strategy without a variant fetches what the reuse ladder holds (Cake: its first variant).
    /// </summary>
    public PrefillStrategy ReuseStrategy { get; init; } = PrefillStrategy.Adaptive;
}

/// <summary>
/// One engine serving many requests with iteration-level (continuous) scheduling. A request first waits for a session
/// (at most <see cref="EngineSchedulerOptions.MaxActiveSessions"/> exist, which bounds KV memory; a bounded queue
/// beyond, then <see cref="EngineBusyException"/>). When its prompt may have a stored prefix, the prefix is looked up off
/// the engine and, by default, obtained from both ends at once (<see cref="KvReuse.BeginPrefillAsync"/>): the fetcher
/// restores its back chunks off the engine while the engine computes its front chunks in its iterations, meeting where
/// the strategy (ours or Cake) decides and re-deciding as the rates change; with <see cref="PrefillMode.FetchOnly"/> it
/// sits in a waiting queue while the whole prefix is fetched off the engine. Each engine iteration spends a token budget
/// of <see cref="EngineSchedulerOptions.PrefillStepTokens"/> by Cake's priority: one decode step for every generating
/// request, then prompt slices of requests without stored context (the one with the least left first; one passed over
/// 8 times goes first), then the compute side of reuse requests (oldest first; one passed over 8 times goes before the
/// others). A reuse request's fetch never blocks anyone: while the chunk in front of its engine side is the fetcher's,
/// the engine serves the others, and when nobody has work it sleeps until a fetcher delivers. A request joins or leaves
/// between any two iterations.
/// The CPU engine computes one sequence per forward step: this interleaves requests' steps, it does not batch their
/// matrix products. Chunks a request computes are published to the store in the background.
/// </summary>
public sealed class EngineScheduler : IAsyncDisposable
{
    private readonly IInferenceModel _model;
    private readonly KvReuse? _reuse;
    private readonly EngineSchedulerOptions _options;
    private readonly ServingMetrics _metrics;
    private readonly Lock _gate = new();
    private readonly LinkedList<Sequence> _queued = new();
    private readonly ConcurrentQueue<Sequence> _inbox = new();
    private readonly ManualResetEventSlim _signal = new(false);
    private readonly Thread _engine;
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<Task> _releases = [];
    private readonly Action _wake;
    private readonly ILogger _logger;
    private int _active;
    private int _fetching;
    private long _kvBytes;
    private bool _closed;

    /// <param name="model">The engine's model.</param>
    /// <param name="reuse">Lookup, fetch and publishing of stored KV; null = every prompt is computed.</param>
    /// <param name="options">Bounds and slicing.</param>
    /// <param name="metrics">Where request statistics go.</param>
    /// <param name="logger">Where the line per request and failures are logged; nowhere by default.</param>
    public EngineScheduler(IInferenceModel model, KvReuse? reuse, EngineSchedulerOptions options, ServingMetrics metrics, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(metrics);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxActiveSessions, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(options.MaxQueuedRequests);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.PrefillStepTokens, 1);
        _model = model;
        _reuse = reuse;
        _options = options;
        _metrics = metrics;
        _wake = _signal.Set;
        _logger = logger ?? NullLogger.Instance;
        _engine = new Thread(EngineLoop) { IsBackground = true, Name = "kvfetch serving engine" };
        _engine.Start();
    }

    /// <summary>Bytes of KV cache the sessions of active requests hold now.</summary>
    public long KvBytesInUse => Interlocked.Read(ref _kvBytes);

    /// <summary>Requests holding a session now.</summary>
    public int ActiveSessions => Volatile.Read(ref _active);

    /// <summary>Requests waiting for a session now.</summary>
    public int QueuedRequests
    {
        get
        {
            lock (_gate)
            {
                return _queued.Count;
            }
        }
    }

    /// <summary>Requests in the waiting queue (their stored prefix being fetched) now.</summary>
    public int FetchingRequests => Volatile.Read(ref _fetching);

    /// <summary>
    /// Admits <paramref name="request"/>: it starts at once when a session is free, else waits in the bounded queue.
    /// Throws <see cref="EngineBusyException"/> when the queue is full too, <see cref="ArgumentException"/> when the
    /// prompt and its token limit do not fit the model's context.
    /// </summary>
    public Generation Submit(GenerationRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(request.Prompt);
        if (request.Prompt.Length == 0)
        {
            throw new ArgumentException("The prompt has no tokens.", nameof(request));
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(request.MaxTokens, 1);
        int context = _model.Config.MaxPositionEmbeddings;
        if ((long)request.Prompt.Length + request.MaxTokens > context)
        {
            throw new ArgumentException($"The prompt ({request.Prompt.Length} tokens) and max_tokens ({request.MaxTokens}) exceed the model's context of {context} tokens.", nameof(request));
        }

        var sequence = new Sequence(request, _reuse?.Plan(request.Prompt, request.TenantSalt), cancellationToken) { Scheduler = this };
        bool start;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_closed, this);
            if (_active < _options.MaxActiveSessions)
            {
                _active++;
                start = true;
            }
            else if (_queued.Count < _options.MaxQueuedRequests)
            {
                sequence.QueueNode = _queued.AddLast(sequence);
                if (cancellationToken.CanBeCanceled)
                {
                    // A client that leaves while queued gives its place back at once, not when a session frees up
                    // (already cancelled: the callback runs here, the lock is re-entrant).
                    sequence.QueueExit = cancellationToken.UnsafeRegister(static (state, _) => ((Sequence)state!).Scheduler!.LeaveQueue((Sequence)state!), sequence);
                }

                start = false;
            }
            else
            {
                _metrics.ObserveRejected();
                throw new EngineBusyException($"The engine is at capacity: {_options.MaxActiveSessions} requests active and {_options.MaxQueuedRequests} queued.");
            }
        }

        if (start)
        {
            Start(sequence);
        }

        return sequence.Handle;
    }

    private void LeaveQueue(Sequence sequence)
    {
        lock (_gate)
        {
            if (sequence.QueueNode?.List is null)
            {
                return; // already started, or dropped by DisposeAsync
            }

            _queued.Remove(sequence.QueueNode);
            sequence.QueueNode = null;
        }

        sequence.Handle.Fail(new OperationCanceledException(sequence.CancellationToken));
        _metrics.ObserveCancelled();
    }

    public async ValueTask DisposeAsync()
    {
        List<Sequence> dropped;
        lock (_gate)
        {
            if (_closed)
            {
                return;
            }

            _closed = true;
            dropped = [.. _queued];
            foreach (Sequence sequence in dropped)
            {
                sequence.QueueNode = null;
            }

            _queued.Clear();
        }

        await _stopping.CancelAsync();
        foreach (Sequence sequence in dropped)
        {
            sequence.Handle.Fail(new ObjectDisposedException(nameof(EngineScheduler)));
        }

        _signal.Set();
        await Task.Run(_engine.Join);

        // Fetchers still stopping may call the wake action: the signal goes once they have.
        Task[] releases;
        lock (_releases)
        {
            releases = [.. _releases];
        }

        await Task.WhenAll(releases).ConfigureAwait(false);
        _signal.Dispose();
        _stopping.Dispose();
    }

    // A session is ours: allocate it, fetch the stored prefix in the waiting queue (or go straight to the engine).
    private void Start(Sequence sequence)
    {
        sequence.Admitted = Stopwatch.GetTimestamp();
        if (sequence.IsCancelled)
        {
            Finish(sequence, new OperationCanceledException(sequence.CancellationToken));
            return;
        }

        try
        {
            sequence.Session = _model.CreateSession(sequence.Request.Prompt.Length + sequence.Request.MaxTokens);
            IKvCache cache = sequence.Session.Cache;
            sequence.KvBytes = cache.GetExportByteCount(cache.Capacity, _model.KvStorageDType);
            Interlocked.Add(ref _kvBytes, sequence.KvBytes);
        }
        catch (Exception ex) when (ex is OutOfMemoryException or ArgumentException)
        {
            Finish(sequence, ex);
            return;
        }

        if (_reuse is not null && sequence.Plan!.ReusableChunks > 0)
        {
            _ = _options.ReuseStrategy.Mode switch
            {
                PrefillMode.FetchOnly => WaitForKvAsync(sequence),
                PrefillMode.ComputeOnly => PostAsync(sequence),
                _ => BeginReuseAsync(sequence),
            };
        }
        else
        {
            Post(sequence);
        }
    }

    /// <summary>The waiting queue: fetch the request's stored prefix off the engine, then hand it to the engine.</summary>
    private Task WaitForKvAsync(Sequence sequence) => OffEngineAsync(
        sequence,
        async () =>
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(sequence.CancellationToken, _stopping.Token);
            // Per chunk, the stored variant of the reuse ladder predicted to arrive first (see KvReuse.FetchPrefixAsync).
            sequence.Restore = await _reuse!.FetchPrefixAsync(sequence.Session!, sequence.Plan!, _reuse.Options.Ladder, linked.Token).ConfigureAwait(false);
        },
        () => sequence.Restore = null);

    /// <summary>
    /// Compute and fetch together: looks up the stored prefix off the engine and starts its fetcher, then hands the request
    /// to the engine, whose iterations compute the front while the fetcher restores the back.
    /// </summary>
    private Task BeginReuseAsync(Sequence sequence) => OffEngineAsync(
        sequence,
        async () =>
        {
            sequence.Stopping = CancellationTokenSource.CreateLinkedTokenSource(sequence.CancellationToken, _stopping.Token);
            sequence.Prefill = await _reuse!.BeginPrefillAsync(sequence.Session!, sequence.Plan!, ServingStrategy(), _wake, sequence.Stopping.Token).ConfigureAwait(false);
        },
        () => sequence.Prefill = null);

    /// <summary>
    /// Runs a reuse request's step off the engine (lookup, and the fetch or the fetcher's start) while it counts as
    /// fetching, then posts it to the engine. The lookup and fetcher turn store failures into misses; any other failure
    /// is a bug, but this request's alone: <paramref name="discard"/> drops what the step set and the engine computes
    /// the whole prompt.
    /// </summary>
    private async Task OffEngineAsync(Sequence sequence, Func<Task> step, Action discard)
    {
        Interlocked.Increment(ref _fetching);
        try
        {
            await step().ConfigureAwait(false);
        }
        catch (OperationCanceledException ex)
        {
            Interlocked.Decrement(ref _fetching);
            Finish(sequence, sequence.IsCancelled ? ex : new ObjectDisposedException(nameof(EngineScheduler)));
            return;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            sequence.Session!.Reset();
            discard();
            ServingLog.PrefixFetchFailed(_logger, ex);
        }

        // Posted before it stops counting as fetching: a stopping engine loop waits for it and fails it.
        Post(sequence);
        Interlocked.Decrement(ref _fetching);
    }

    // The options' strategy with its variant filled in: Cake fetches one variant (the ladder's first, unless named).
    private PrefillStrategy ServingStrategy() =>
        _options.ReuseStrategy is { Mode: PrefillMode.Cake, Variant: null } ? PrefillStrategy.Cake(_reuse!.Options.Ladder[0]) : _options.ReuseStrategy;

    private Task PostAsync(Sequence sequence)
    {
        Post(sequence);
        return Task.CompletedTask;
    }

    private void Post(Sequence sequence)
    {
        sequence.Ready = Stopwatch.GetTimestamp();
        _inbox.Enqueue(sequence);
        _signal.Set();
    }

    /// <summary>The request left the engine (done, failed or cancelled): its session goes to the next queued request.</summary>
    private void Finish(Sequence sequence, Exception? failure)
    {
        if (failure is not null)
        {
            sequence.Handle.Fail(failure);
            if (failure is not OperationCanceledException)
            {
                _metrics.ObserveFailed();
            }
            else
            {
                _metrics.ObserveCancelled();
            }
        }

        if (failure is not null and not OperationCanceledException)
        {
            ServingLog.RequestFailed(_logger, sequence.Request.Tenant, sequence.Request.Prompt.Length, failure);
        }

        // A GPU session holds device memory: give it back now, not at collection (after its fetcher has stopped).
        Release(sequence);
        Interlocked.Add(ref _kvBytes, -sequence.KvBytes);
        sequence.KvBytes = 0;
        while (true)
        {
            Sequence? next;
            lock (_gate)
            {
                if (_closed || _queued.First is not { } first)
                {
                    _active--;
                    return;
                }

                next = first.Value;
                _queued.RemoveFirst();
                next.QueueNode = null;
            }

            next.QueueExit.Dispose();
            if (!next.IsCancelled)
            {
                Start(next);
                return;
            }

            next.Handle.Fail(new OperationCanceledException(next.CancellationToken));
            _metrics.ObserveCancelled();
        }
    }

    /// <summary>
    /// Stops a reuse request's fetcher (transfers in flight are cancelled) in the background; its session goes once the
    /// fetcher has stopped writing into it, and a session without a fetcher goes now.
    /// </summary>
    private void Release(Sequence sequence)
    {
        IInferenceSession? session = sequence.Session;
        sequence.Session = null;
        StopFetcher(sequence);
        Task? stopped = sequence.FetcherStopped;
        if (stopped is null)
        {
            session?.Dispose();
            sequence.Stopping?.Dispose();
            return;
        }

        Track(ReleaseAfterAsync(stopped, session, sequence.Stopping, _logger));

        static async Task ReleaseAfterAsync(Task stopped, IInferenceSession? session, CancellationTokenSource? stopping, ILogger logger)
        {
            try
            {
                await stopped.ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                ServingLog.FetcherStopFailed(logger, ex);
            }
            finally
            {
                session?.Dispose();
                stopping?.Dispose();
            }
        }
    }

    /// <summary>Starts stopping the request's fetcher, once (at its first token, or when it leaves).</summary>
    private void StopFetcher(Sequence sequence)
    {
        if (sequence.Prefill is { } prefill && sequence.FetcherStopped is null)
        {
            sequence.FetcherStopped = Track(prefill.DisposeAsync().AsTask());
        }
    }

    private Task Track(Task task)
    {
        lock (_releases)
        {
            _releases.RemoveAll(t => t.IsCompleted);
            _releases.Add(task);
        }

        return task;
    }

    private void EngineLoop()
    {
        var logits = new float[_model.Config.VocabSize];
        var prefilling = new List<Sequence>();
        var reusing = new List<Sequence>();
        var decoding = new List<Sequence>();
        IReadOnlySet<int> eos = _model.Tokenizer.EosIds;
        while (true)
        {
            _signal.Reset();
            while (_inbox.TryDequeue(out Sequence? ready))
            {
                if (_stopping.IsCancellationRequested)
                {
                    Finish(ready, new ObjectDisposedException(nameof(EngineScheduler)));
                    continue;
                }

                ready.StartSampling(_model.Tokenizer, _model.Config.VocabSize);
                if (ready.Prefill is { StoredChunks: > 0 })
                {
                    reusing.Add(ready); // its engine side computes from position 0 beside its fetcher
                    continue;
                }

                int reused = Math.Min(ready.Session!.Cache.Length, ready.Request.Prompt.Length - 1);
                ready.Session.Cache.Truncate(reused);
                ready.Reused = reused;
                ready.Computed = reused;
                prefilling.Add(ready);
            }

            if (_stopping.IsCancellationRequested)
            {
                foreach (Sequence sequence in prefilling.Concat(reusing).Concat(decoding))
                {
                    Finish(sequence, new ObjectDisposedException(nameof(EngineScheduler)));
                }

                if (Volatile.Read(ref _fetching) == 0 && _inbox.IsEmpty)
                {
                    return;
                }

                prefilling.Clear();
                reusing.Clear();
                decoding.Clear();
                _signal.Wait(50);
                continue;
            }

            // A request whose client left stops here, whatever its place.
            DropCancelled(prefilling);
            DropCancelled(reusing);
            if (prefilling.Count == 0 && reusing.Count == 0 && decoding.Count == 0)
            {
                _signal.Wait();
                continue;
            }

            // Cake's priority under the iteration's token budget: decode, then prefill of requests without stored
            // context, then the compute side of reuse requests.
            int budget = _options.PrefillStepTokens;
            for (int i = 0; i < decoding.Count; i++)
            {
                Sequence sequence = decoding[i];
                bool leaves;
                if (sequence.IsCancelled)
                {
                    Finish(sequence, new OperationCanceledException(sequence.CancellationToken));
                    leaves = true;
                }
                else
                {
                    leaves = Step(sequence, logits, eos, prefill: false) == StepOutcome.Left;
                }

                if (leaves)
                {
                    decoding.RemoveAt(i);
                    i--;
                }
            }

            budget = Math.Max(budget - decoding.Count, (budget + 1) / 2);
            bool worked = decoding.Count > 0;

            // A reuse request passed over too often goes before the requests without stored context once.
            foreach (Sequence sequence in reusing)
            {
                sequence.Served = false;
            }

            TimeSpan recheck = Timeout.InfiniteTimeSpan;
            for (int i = 0; i < reusing.Count && budget > 0; i++)
            {
                if (reusing[i].PassedOver >= MaxPassedOver)
                {
                    worked |= ReuseSteps(reusing, ref i, logits, eos, prefilling, decoding, ref budget, ref recheck);
                }
            }

            // Prompt slices of requests without stored context, the one with the least left first.
            while (prefilling.Count > 0 && budget > 0)
            {
                int index = NextPrefill(prefilling);
                Sequence sequence = prefilling[index];
                int slice = Math.Min(budget, sequence.Request.Prompt.Length - sequence.Computed);
                StepOutcome outcome = Step(sequence, logits, eos, prefill: true, slice);
                budget -= slice;
                worked = true;
                if (outcome != StepOutcome.Working)
                {
                    prefilling.RemoveAt(index);
                }

                if (outcome == StepOutcome.Generating)
                {
                    decoding.Add(sequence);
                }
            }

            // The compute side of reuse requests, oldest first, with what is left; the others are passed over.
            for (int i = 0; i < reusing.Count; i++)
            {
                if (budget > 0)
                {
                    worked |= ReuseSteps(reusing, ref i, logits, eos, prefilling, decoding, ref budget, ref recheck);
                }
                else if (!reusing[i].Served)
                {
                    reusing[i].PassedOver++;
                }
            }

            if (!worked)
            {
                // Every reuse request waits for its fetcher and nothing else is to be done: sleep until a fetcher
                // delivers (its board wakes the loop), a request arrives, or a strategy wants to decide again.
                _signal.Wait(recheck);
            }
        }
    }

    /// <summary>
    /// Engine steps on the reuse request at <paramref name="index"/> while the budget lasts and its strategy gives the
    /// engine work; once its stored prefix is settled it moves to <paramref name="prefilling"/> (the rest of its prompt
    /// is an ordinary prefill), at the first token to <paramref name="decoding"/> (or it leaves). Returns whether it computed.
    /// </summary>
    private bool ReuseSteps(List<Sequence> reusing, ref int index, float[] logits, IReadOnlySet<int> eos, List<Sequence> prefilling, List<Sequence> decoding, ref int budget, ref TimeSpan recheck)
    {
        Sequence sequence = reusing[index];
        ReusePrefill prefill = sequence.Prefill!;
        bool computed = false;
        while (budget > 0)
        {
            EngineStep step;
            try
            {
                step = prefill.NextStep(budget);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                reusing.RemoveAt(index--);
                Finish(sequence, ex);
                return computed;
            }

            if (step.Kind == EngineStepKind.Wait)
            {
                if (step.Recheck != Timeout.InfiniteTimeSpan && (recheck == Timeout.InfiniteTimeSpan || step.Recheck < recheck))
                {
                    recheck = step.Recheck < TimeSpan.Zero ? TimeSpan.Zero : step.Recheck;
                }

                break;
            }

            computed = true;
            sequence.Served = true;
            sequence.PassedOver = 0;
            budget -= step.Count;
            StepOutcome outcome = Step(sequence, logits, eos, prefill: true, step.Count, step);
            if (outcome == StepOutcome.Working && !prefill.InSuffix)
            {
                continue;
            }

            reusing.RemoveAt(index--);
            if (outcome == StepOutcome.Generating)
            {
                decoding.Add(sequence);
            }
            else if (outcome == StepOutcome.Working)
            {
                // The stored prefix is settled: the rest of the prompt is an ordinary prefill, shortest first among them
                // (as a request whose prefix the waiting queue fetched).
                sequence.Computed = prefill.NextPosition;
                prefilling.Add(sequence);
            }

            break;
        }

        return computed;
    }

    private void DropCancelled(List<Sequence> sequences)
    {
        for (int i = sequences.Count - 1; i >= 0; i--)
        {
            if (sequences[i].IsCancelled)
            {
                Sequence cancelled = sequences[i];
                sequences.RemoveAt(i);
                Finish(cancelled, new OperationCanceledException(cancelled.CancellationToken));
            }
        }
    }

    /// <summary>Prefill slices another request may take before a passed-over one goes first.</summary>
    private const int MaxPassedOver = 8;

    // Shortest remaining prompt first (oldest on ties), unless someone has been passed over too often (oldest of those).
    private static int NextPrefill(List<Sequence> prefilling)
    {
        int best = 0;
        for (int i = 0; i < prefilling.Count; i++)
        {
            if (prefilling[i].PassedOver >= MaxPassedOver)
            {
                best = i;
                break;
            }

            if (Remaining(prefilling[i]) < Remaining(prefilling[best]))
            {
                best = i;
            }
        }

        for (int i = 0; i < prefilling.Count; i++)
        {
            prefilling[i].PassedOver = i == best ? 0 : prefilling[i].PassedOver + 1;
        }

        return best;

        static int Remaining(Sequence sequence) => sequence.Request.Prompt.Length - sequence.Computed;
    }

    private enum StepOutcome
    {
        /// <summary>Still prefilling, or still decoding.</summary>
        Working,

        /// <summary>The prompt is done and the first token chosen; decoding follows.</summary>
        Generating,

        /// <summary>Finished, failed: the request has left the engine.</summary>
        Left,
    }

    /// <summary>
    /// One step of <paramref name="sequence"/>: a prefill slice of <paramref name="count"/> tokens (for a reuse request,
    /// the engine step <paramref name="reuseStep"/> its strategy gave), or a decode step.
    /// </summary>
    private StepOutcome Step(Sequence sequence, float[] logits, IReadOnlySet<int> eos, bool prefill, int count = 0, EngineStep reuseStep = default)
    {
        IInferenceSession session = sequence.Session!;
        int[] prompt = sequence.Request.Prompt;
        try
        {
            if (prefill && sequence.Prefill is { StoredChunks: > 0 } reuse)
            {
                if (reuseStep.Kind is not (EngineStepKind.Compute or EngineStepKind.ComputeLower) || reuseStep.Count == 0)
                {
                    reuseStep = reuse.NextStep(count); // the rest of the prompt, from the prefilling list
                }

                long started = Stopwatch.GetTimestamp();
                if (reuseStep.Kind == EngineStepKind.ComputeLower)
                {
                    // ours-layer: the lower layers of the chunk where the engine and the fetcher meet; the fetcher brings
                    // its upper layers, and the positions count as computed once both are in.
                    session.PrefillLowerLayers(prompt.AsSpan(reuseStep.Start, reuseStep.Count), reuseStep.Start, reuseStep.Layers);
                    reuse.Computed(reuseStep, Stopwatch.GetElapsedTime(started));
                    return StepOutcome.Working;
                }

                session.Prefill(prompt.AsSpan(reuseStep.Start, reuseStep.Count), reuseStep.Start, logits);
                reuse.Computed(reuseStep, Stopwatch.GetElapsedTime(started));
                sequence.Computed = reuseStep.Start + reuseStep.Count;
                if (reuseStep.Start + reuseStep.Count < prompt.Length)
                {
                    return StepOutcome.Working;
                }

                // The prompt is done: the fetcher has stopped claiming; it stops for good in the background.
                sequence.Split = reuse.Split();
                sequence.Reused = sequence.Split.FetchedChunks * sequence.Plan!.ChunkTokens;
                for (int queued = reuse.Publish(); queued > 0; queued--)
                {
                    _metrics.ObservePublishedChunk();
                }

                StopFetcher(sequence);
            }
            else if (prefill)
            {
                long started = Stopwatch.GetTimestamp();
                session.Prefill(prompt.AsSpan(sequence.Computed, count), sequence.Computed, logits);
                if (_reuse is not null && count == _reuse.Options.ChunkTokens && sequence.Computed % count == 0)
                {
                    // A whole chunk computed: what the predictions are made from (else they use a prior).
                    _reuse.Rates.ObserveCompute(sequence.Computed / count, Stopwatch.GetElapsedTime(started).TotalSeconds);
                }

                sequence.Computed += count;
                if (sequence.Computed < prompt.Length)
                {
                    return StepOutcome.Working;
                }

                Publish(sequence);
            }
            else
            {
                session.Decode(sequence.LastToken, prompt.Length + sequence.Generated - 1, logits);
            }

            FinishReason? reason = sequence.Accept(logits.AsSpan(0, _model.Config.VocabSize), eos);
            long now = Stopwatch.GetTimestamp();
            if (prefill)
            {
                sequence.Info = FirstTokenInfo(sequence);
                sequence.Handle.PublishFirst(sequence.Info);
                _metrics.ObserveFirstToken(sequence.Info);
            }
            else
            {
                _metrics.ObserveToken(Stopwatch.GetElapsedTime(sequence.LastTokenAt, now));
            }

            sequence.LastTokenAt = now;

            if (reason is not FinishReason finish)
            {
                return prefill ? StepOutcome.Generating : StepOutcome.Working;
            }

            string text = sequence.Finish(finish);
            var result = new GenerationResult
            {
                Text = text,
                FinishReason = finish,
                CompletionTokens = sequence.Generated,
                Prefill = sequence.Info!,
                Elapsed = Stopwatch.GetElapsedTime(sequence.Submitted),
            };
            _metrics.ObserveCompleted(result);
            LogCompleted(sequence.Request, result);
            sequence.Handle.Complete(result);
            PublishAnswer(sequence);
            Finish(sequence, null);
            return StepOutcome.Left;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // One request's failure is its own; the engine keeps serving the others.
            Finish(sequence, ex);
            return StepOutcome.Left;
        }
    }

    // Store the chunks this request computed (the stored prefix is already there), off the engine thread; none when
    // they were computed on top of KV restored from a lossy variant, and of a chunk stored at lookup only what went missing.
    private void Publish(Sequence sequence)
    {
        if (_reuse is null || sequence.Restore?.RestoredLossy == true)
        {
            return;
        }

        ContextPlan plan = sequence.Plan!;
        int stored = sequence.Restore?.StoredChunks ?? 0;
        for (int chunk = sequence.Reused / plan.ChunkTokens; chunk < plan.Keys.Length; chunk++)
        {
            bool queued = chunk >= stored ? _reuse.Publisher.TryEnqueue(plan, chunk, sequence.Session!.Cache)
                : sequence.Restore!.UnauthenticChunks.TryGetValue(chunk, out KvVariant wrong) ? _reuse.Publisher.TryEnqueueReplacing(plan, chunk, sequence.Session!.Cache, wrong)
                : _reuse.Publisher.TryEnqueueMissing(plan, chunk, sequence.Session!.Cache);
            if (queued)
            {
                _metrics.ObservePublishedChunk();
            }
        }
    }

    // Store the chunks the answer completed (prompt + generated tokens whose KV is in the cache: all but the last
    // token), so the next turn of a conversation, whose prompt repeats this one and the answer, reuses them too.
    private void PublishAnswer(Sequence sequence)
    {
        if (_reuse is null || !_options.PublishAnswers || sequence.Restore?.RestoredLossy == true || sequence.Split?.RestoredLossy == true)
        {
            return;
        }

        int[] prompt = sequence.Request.Prompt;
        int cached = prompt.Length + sequence.Generated - 1;
        ContextPlan promptPlan = sequence.Plan!;
        if (cached / promptPlan.ChunkTokens <= promptPlan.Keys.Length)
        {
            return; // no chunk completed beyond the prompt's
        }

        var tokens = new int[cached];
        prompt.CopyTo(tokens, 0);
        for (int i = prompt.Length; i < cached; i++)
        {
            tokens[i] = sequence.GeneratedTokens[i - prompt.Length];
        }

        ContextPlan plan = _reuse.Plan(tokens, sequence.Request.TenantSalt);
        for (int chunk = promptPlan.Keys.Length; chunk < plan.Keys.Length; chunk++)
        {
            if (_reuse.Publisher.TryEnqueue(plan, chunk, sequence.Session!.Cache))
            {
                _metrics.ObservePublishedChunk();
            }
        }
    }

    private static PrefillInfo FirstTokenInfo(Sequence sequence)
    {
        long now = Stopwatch.GetTimestamp();
        RestoreReport? restore = sequence.Restore;
        ReuseSplit? split = sequence.Split ?? sequence.Prefill?.Split() ?? WaitingQueueSplit(sequence);
        return new PrefillInfo
        {
            PromptTokens = sequence.Request.Prompt.Length,
            ReusedTokens = sequence.Reused,
            LookedUp = split is not null,
            StoredChunks = split?.StoredChunks ?? 0,
            FailedChunks = split?.FailedChunks ?? 0,
            LookupFailed = split?.LookupFailed ?? false,
            BytesFetched = split?.BytesFetched ?? 0,
            Reuse = split,
            Queue = Stopwatch.GetElapsedTime(sequence.Submitted, sequence.Admitted),
            Fetch = Stopwatch.GetElapsedTime(sequence.Admitted, sequence.Ready),
            Prefill = Stopwatch.GetElapsedTime(sequence.Ready, now),
            TimeToFirstToken = Stopwatch.GetElapsedTime(sequence.Submitted, now),
            Variants = restore?.Variants ?? s_none,
            Fallbacks = restore?.Fallbacks ?? s_none,
        };

        // The waiting queue fetched the prefix from the front; the engine computed what did not arrive.
        static ReuseSplit? WaitingQueueSplit(Sequence sequence)
        {
            if (sequence.Restore is not { } restore)
            {
                return null;
            }

            int fetched = sequence.Reused / sequence.Plan!.ChunkTokens;
            return new ReuseSplit
            {
                Strategy = "fetch-queue",
                StoredChunks = restore.StoredChunks,
                ComputedChunks = restore.StoredChunks - fetched,
                FetchedChunks = fetched,
                FailedChunks = restore.StoredChunks - fetched,
                MeetingChunk = fetched > 0 ? 0 : restore.StoredChunks,
                Variants = restore.Variants,
                BytesFetched = restore.BytesFetched,
                RestoredLossy = restore.RestoredLossy,
                LookupFailed = restore.LookupFailed,
            };
        }
    }

    private static readonly Dictionary<string, int> s_none = [];

    // The one line per request: who, how much was reused and how, what fell back and why, and where the time went.
    private void LogCompleted(GenerationRequest request, GenerationResult result)
    {
        if (!_logger.IsEnabled(LogLevel.Information))
        {
            return;
        }

        PrefillInfo info = result.Prefill;
        string variants = Summary(info.Variants);
        string fallbacks = info.LookupFailed ? "lookup_failed" : Summary(info.Fallbacks);
        ServingLog.RequestCompleted(_logger, request.Tenant, info.PromptTokens, info.ReusedTokens, info.ComputedTokens, variants,
            fallbacks, info.TimeToFirstToken.TotalMilliseconds, info.Queue.TotalMilliseconds,
            info.Fetch.TotalMilliseconds, info.Prefill.TotalMilliseconds, result.CompletionTokens, result.FinishReason, result.Elapsed.TotalMilliseconds);

        static string Summary(IReadOnlyDictionary<string, int> counts) =>
            counts.Count == 0 ? "none" : string.Join(' ', counts.OrderBy(c => c.Key, StringComparer.Ordinal).Select(c => $"{c.Key}={c.Value}"));
    }
}
