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

    /// <summary>The most prompt tokens one iteration computes for one request.</summary>
    public int PrefillStepTokens { get; init; } = 256;
}

/// <summary>
/// One engine serving many requests with iteration-level (continuous) scheduling. A request first waits for a session
/// (at most <see cref="EngineSchedulerOptions.MaxActiveSessions"/> exist, which bounds KV memory; a bounded queue
/// beyond, then <see cref="EngineBusyException"/>); then, when its prompt has a stored prefix, it sits in the waiting
/// queue while that prefix is fetched off the engine (<see cref="KvReuse.FetchPrefixAsync(IInferenceSession, ContextPlan, IReadOnlyList{KvVariant}, CancellationToken)"/>), so requests without
/// reuse are never stuck behind a transfer; then it joins the engine thread. Each engine iteration computes one slice
/// of at most <see cref="EngineSchedulerOptions.PrefillStepTokens"/> prompt tokens for one prefilling request (the one
/// with the least left to compute, so a request whose prefix was fetched does not wait behind a long computation; one
/// passed over 8 times goes first) and one decode step for every request that is generating, round robin, so a long
/// prompt arriving never stalls the others' streams for longer than one slice, and a request joins or leaves between
/// any two steps.
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
            _ = WaitForKvAsync(sequence);
        }
        else
        {
            Post(sequence);
        }
    }

    /// <summary>The waiting queue: fetch the request's stored prefix off the engine, then hand it to the engine.</summary>
    private async Task WaitForKvAsync(Sequence sequence)
    {
        Interlocked.Increment(ref _fetching);
        try
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(sequence.CancellationToken, _stopping.Token);
            // Per chunk, the stored variant of the reuse ladder predicted to arrive first (see KvReuse.FetchPrefixAsync).
            sequence.Restore = await _reuse!.FetchPrefixAsync(sequence.Session!, sequence.Plan!, _reuse.Options.Ladder, linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException ex)
        {
            Interlocked.Decrement(ref _fetching);
            Finish(sequence, sequence.IsCancelled ? ex : new ObjectDisposedException(nameof(EngineScheduler)));
            return;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // The fetcher turns store failures into misses; anything else is a bug, but it is this request's alone:
            // compute everything.
            sequence.Session!.Reset();
            sequence.Restore = null;
            ServingLog.PrefixFetchFailed(_logger, ex);
        }

        Interlocked.Decrement(ref _fetching);
        Post(sequence);
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

        // A GPU session holds device memory: give it back now, not at collection.
        sequence.Session?.Dispose();
        sequence.Session = null;
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

    private void EngineLoop()
    {
        var logits = new float[_model.Config.VocabSize];
        var prefilling = new List<Sequence>();
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
                int reused = Math.Min(ready.Session!.Cache.Length, ready.Request.Prompt.Length - 1);
                ready.Session.Cache.Truncate(reused);
                ready.Reused = reused;
                ready.Computed = reused;
                prefilling.Add(ready);
            }

            if (_stopping.IsCancellationRequested)
            {
                foreach (Sequence sequence in prefilling.Concat(decoding))
                {
                    Finish(sequence, new ObjectDisposedException(nameof(EngineScheduler)));
                }

                if (Volatile.Read(ref _fetching) == 0 && _inbox.IsEmpty)
                {
                    return;
                }

                prefilling.Clear();
                decoding.Clear();
                _signal.Wait(50);
                continue;
            }

            // A request whose client left stops here, whatever its place in the prefill order.
            for (int i = prefilling.Count - 1; i >= 0; i--)
            {
                if (prefilling[i].IsCancelled)
                {
                    Sequence cancelled = prefilling[i];
                    prefilling.RemoveAt(i);
                    Finish(cancelled, new OperationCanceledException(cancelled.CancellationToken));
                }
            }

            if (prefilling.Count == 0 && decoding.Count == 0)
            {
                _signal.Wait();
                continue;
            }

            // One prefill slice for the prefilling request with the least left to compute (a request whose prefix was
            // fetched finishes in one slice instead of waiting behind a long computation); one passed over too often
            // goes first, so a stream of short prompts cannot starve a long one.
            if (prefilling.Count > 0)
            {
                int index = NextPrefill(prefilling);
                Sequence sequence = prefilling[index];
                if (sequence.IsCancelled)
                {
                    prefilling.RemoveAt(index);
                    Finish(sequence, new OperationCanceledException(sequence.CancellationToken));
                }
                else
                {
                    StepOutcome outcome = Step(sequence, logits, eos, prefill: true);
                    if (outcome != StepOutcome.Working)
                    {
                        prefilling.RemoveAt(index);
                    }

                    if (outcome == StepOutcome.Generating)
                    {
                        decoding.Add(sequence);
                    }
                }
            }

            // One decode step for every generating request.
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

    /// <summary>One step of <paramref name="sequence"/>: a prefill slice, or a decode step.</summary>
    private StepOutcome Step(Sequence sequence, float[] logits, IReadOnlySet<int> eos, bool prefill)
    {
        IInferenceSession session = sequence.Session!;
        int[] prompt = sequence.Request.Prompt;
        try
        {
            if (prefill)
            {
                int count = Math.Min(_options.PrefillStepTokens, prompt.Length - sequence.Computed);
                long started = Stopwatch.GetTimestamp();
                session.Prefill(prompt.AsSpan(sequence.Computed, count), sequence.Computed, logits);
                if (_reuse is not null && count == _reuse.Options.ChunkTokens && sequence.Computed % count == 0)
                {
                    // A whole chunk computed: what the waiting queue's deadline predicts from (else it uses a prior).
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
        if (_reuse is null || !_options.PublishAnswers || sequence.Restore?.RestoredLossy == true)
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
        return new PrefillInfo
        {
            PromptTokens = sequence.Request.Prompt.Length,
            ReusedTokens = sequence.Reused,
            LookedUp = restore is not null,
            StoredChunks = restore?.StoredChunks ?? 0,
            FailedChunks = restore is null ? 0 : restore.StoredChunks - (sequence.Reused / sequence.Plan!.ChunkTokens),
            LookupFailed = restore?.LookupFailed ?? false,
            BytesFetched = restore?.BytesFetched ?? 0,
            Queue = Stopwatch.GetElapsedTime(sequence.Submitted, sequence.Admitted),
            Fetch = Stopwatch.GetElapsedTime(sequence.Admitted, sequence.Ready),
            Prefill = Stopwatch.GetElapsedTime(sequence.Ready, now),
            TimeToFirstToken = Stopwatch.GetElapsedTime(sequence.Submitted, now),
            Variants = restore?.Variants ?? s_none,
            Fallbacks = restore?.Fallbacks ?? s_none,
        };
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
