using System.Diagnostics;
using System.Threading.Channels;
using KvFetcher.Engine;

namespace KvFetcher.Fetch.Scheduling;

/// <summary>How a <see cref="RequestScheduler"/> treats requests that reuse stored KV.</summary>
public sealed record RequestSchedulerOptions
{
    /// <summary>
    /// True (KVFetcher's design): a request waiting for its KV sits in a separate waiting queue while its chunks are
    /// fetched and restored off the engine; only then does it queue for the engine to compute its suffix. False: one
    /// FIFO queue, and the engine serves a reuse request by fetching inline (blocking everyone behind it).
    /// </summary>
    public bool SeparateWaitingQueue { get; init; } = true;

    /// <summary>The variant reuse requests fetch.</summary>
    public KvVariant Variant { get; init; } = KvVariant.Raw;
}

/// <summary>The outcome of one request: its TTFT (submission to first token, queueing included) and what it reused.</summary>
public readonly record struct RequestResult(bool Reuse, TimeSpan TimeToFirstToken, int ReusedTokens, int FirstToken);

/// <summary>
/// One engine serving many requests: a single engine thread computes prefills in arrival order from a ready queue.
/// Requests with reuse wait for their KV in a separate waiting queue (their fetch runs concurrently on the fetcher's
/// own workers), so requests without reuse are never stuck behind a transfer.
/// </summary>
public sealed class RequestScheduler : IAsyncDisposable
{
    private readonly IInferenceModel _model;
    private readonly KvReuse _reuse;
    private readonly RequestSchedulerOptions _options;
    private readonly Channel<Job> _ready = Channel.CreateUnbounded<Job>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Thread _engine;

    public RequestScheduler(IInferenceModel model, KvReuse reuse, RequestSchedulerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(reuse);
        _model = model;
        _reuse = reuse;
        _options = options ?? new RequestSchedulerOptions();
        _engine = new Thread(EngineLoop) { IsBackground = true, Name = "kvfetch engine" };
        _engine.Start();
    }

    /// <summary>
    /// Queues a prompt; completes with its first token once prefilled, or with the exception that ended it (an empty
    /// prompt, a session that cannot be created, a failed prefill). Every request completes.
    /// </summary>
    public Task<RequestResult> SubmitAsync(int[] tokens, bool reuse, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (tokens.Length == 0)
        {
            return Task.FromException<RequestResult>(new ArgumentException("The prompt is empty: a request needs at least one token.", nameof(tokens)));
        }

        var job = new Job(tokens, reuse, Stopwatch.GetTimestamp(), new TaskCompletionSource<RequestResult>(TaskCreationOptions.RunContinuationsAsynchronously));
        if (reuse && _options.SeparateWaitingQueue)
        {
            _ = WaitForKvAsync(job, cancellationToken);
        }
        else if (!_ready.Writer.TryWrite(job))
        {
            job.Done.SetException(new ObjectDisposedException(nameof(RequestScheduler)));
        }

        return job.Done.Task;
    }

    public async ValueTask DisposeAsync()
    {
        _ready.Writer.TryComplete();
        await Task.Run(_engine.Join).ConfigureAwait(false);
    }

    /// <summary>
    /// The waiting queue: restore the request's stored prefix off the engine, then hand it to the ready queue. A restore
    /// that fails for any reason but cancellation leaves the engine to compute everything; a session that cannot be
    /// created fails the request. Either way the request completes.
    /// </summary>
    private async Task WaitForKvAsync(Job job, CancellationToken cancellationToken)
    {
        try
        {
            job.Session = _model.CreateSession(job.Tokens.Length);
            try
            {
                job.Reused = await _reuse.RestoreAsync(job.Session, job.Tokens, _options.Variant, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not (OperationCanceledException or ObjectDisposedException or OutOfMemoryException))
            {
                Trace.TraceWarning($"kvfetch scheduler: restoring a stored prefix failed, computing instead: {ex.Message}");
                job.Session.Reset();
                job.Reused = 0;
            }

            if (!_ready.Writer.TryWrite(job))
            {
                Fail(job, new ObjectDisposedException(nameof(RequestScheduler)));
            }
        }
        catch (Exception ex)
        {
            Fail(job, ex);
        }
    }

    private static void Fail(Job job, Exception ex)
    {
        job.Session?.Dispose();
        job.Session = null;
        job.Done.TrySetException(ex);
    }

    private void EngineLoop()
    {
        var logits = new float[_model.Config.VocabSize];
        ChannelReader<Job> reader = _ready.Reader;
        while (reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
        {
            while (reader.TryRead(out Job? job))
            {
                try
                {
                    int reused = job.Reused;
                    if (job.Reuse && !_options.SeparateWaitingQueue)
                    {
                        // The single-queue baseline: the engine itself waits for the transfer.
                        job.Session = _model.CreateSession(job.Tokens.Length);
                        reused = _reuse.PrefillAsync(job.Session, job.Tokens, PrefillStrategy.FetchOnly(_options.Variant), logits, publish: false)
                            .GetAwaiter().GetResult().ReusedTokens;
                    }
                    else
                    {
                        job.Session ??= _model.CreateSession(job.Tokens.Length);
                        IInferenceSession session = job.Session;
                        int start = Math.Min(session.Cache.Length, job.Tokens.Length - 1);
                        session.Prefill(job.Tokens.AsSpan(start), start, logits);
                        reused = start;
                    }

                    int first = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits.AsSpan(0, _model.Config.VocabSize));
                    job.Done.TrySetResult(new RequestResult(job.Reuse, Stopwatch.GetElapsedTime(job.Submitted), reused, first));
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    // One request's failure (e.g. a prompt too long for the engine) is its own; the engine keeps serving.
                    job.Done.TrySetException(ex);
                }
                finally
                {
                    job.Session?.Dispose();
                    job.Session = null;
                }
            }
        }
    }

    private sealed class Job(int[] tokens, bool reuse, long submitted, TaskCompletionSource<RequestResult> done)
    {
        public int[] Tokens { get; } = tokens;

        public bool Reuse { get; } = reuse;

        public long Submitted { get; } = submitted;

        public TaskCompletionSource<RequestResult> Done { get; } = done;

        public IInferenceSession? Session { get; set; }

        public int Reused { get; set; }
    }
}
