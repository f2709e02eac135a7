using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using KvFetcher.Engine;
using KvFetcher.Fetch.Telemetry;
using KvFetcher.Store;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvFetcher.Fetch.Publishing;

/// <summary>
/// Stores computed chunks in the background: the request thread only copies a chunk's KV out of the cache (about a
/// millisecond per chunk here); a worker encodes each ladder variant once and puts the containers of a chunk
/// concurrently (<see cref="KvPublisherOptions.PutsInFlight"/>), each within <see cref="KvPublisherOptions.PutTimeout"/>.
/// Nothing ever reaches the request: a full queue drops the chunk, and a variant that fails to encode or to be stored
/// is counted (<see cref="Failed"/>, <see cref="FailuresOf"/>) with its reason in <see cref="LastError"/>; the workers
/// go on with the next one, so <see cref="WhenIdleAsync"/> always completes. A store that keeps failing is left alone
/// for a back-off, its queue skipped (counted). Puts are atomic in every store, so a failed write never leaves a
/// visible partial object. Variants whose codec cannot run here are left out of the ladder (<see cref="LadderWarning"/>).
/// </summary>
public sealed class KvPublisher : IAsyncDisposable
{
    private readonly IKvStore _store;
    private readonly IReadOnlyList<KvVariant> _ladder;
    private readonly KvPublisherOptions _options;
    private readonly Channel<Job> _queue;
    private readonly Task _worker;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<KvVariant, long> _variantFailures = new();
    private int _pending;
    private long _published;
    private long _failed;
    private long _encodeFailures;
    private long _putFailures;
    private long _skipped;
    private long _unchanged;
    private long _dropped;
    private readonly ILogger _logger;
    private long _bytes;
    private int _consecutivePutFailures;
    private long _backOffUntil;
    private string? _lastError;
    private TaskCompletionSource _idle = NewIdle(completed: true);

    /// <param name="store">Where containers go.</param>
    /// <param name="ladder">The variants stored per chunk (those whose codec cannot run here are left out).</param>
    /// <param name="maxQueuedChunks">Chunks waiting beyond this are dropped (and counted).</param>
    /// <param name="workers">Chunks encoded at once (one by default, so the background work takes one core from the engine).</param>
    /// <param name="options">Put deadline, puts in flight and back-off; the defaults when null.</param>
    /// <param name="logger">Where failures are logged (one line per kind of failure, not per container); nowhere by default.</param>
    public KvPublisher(IKvStore store, IReadOnlyList<KvVariant> ladder, int maxQueuedChunks = 256, int workers = 1, KvPublisherOptions? options = null, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(ladder);
        ArgumentOutOfRangeException.ThrowIfLessThan(workers, 1);
        options ??= new KvPublisherOptions();
        options.Validate();
        _store = store;
        _logger = logger ?? NullLogger.Instance;
        _ladder = UsableLadder.Of(ladder, out string? warning);
        LadderWarning = warning;
        _options = options;
        _queue = Channel.CreateBounded<Job>(new BoundedChannelOptions(maxQueuedChunks) { SingleReader = workers == 1, FullMode = BoundedChannelFullMode.Wait });
        _worker = Task.WhenAll(Enumerable.Range(0, workers).Select(_ =>
            Task.Factory.StartNew(() => RunAsync(_stop.Token), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default).Unwrap()));
    }

    /// <summary>The variants stored per chunk: the ladder given, less those whose codec cannot run here.</summary>
    public IReadOnlyList<KvVariant> Ladder => _ladder;

    /// <summary>One line naming the variants left out of the ladder and why, or null.</summary>
    public string? LadderWarning { get; }

    /// <summary>Variant containers stored.</summary>
    public long Published => Interlocked.Read(ref _published);

    /// <summary>
    /// Variant containers not stored: the store refused, failed or missed the deadline (<see cref="PutFailures"/>), the
    /// codec failed (<see cref="EncodeFailures"/>), or the store was being left alone (<see cref="Skipped"/>).
    /// </summary>
    public long Failed => Interlocked.Read(ref _failed);

    /// <summary>Puts that failed or missed their deadline.</summary>
    public long PutFailures => Interlocked.Read(ref _putFailures);

    /// <summary>Variants whose encoding failed (nothing was put for them).</summary>
    public long EncodeFailures => Interlocked.Read(ref _encodeFailures);

    /// <summary>Variants not tried because the store had failed repeatedly and was being left alone.</summary>
    public long Skipped => Interlocked.Read(ref _skipped);

    /// <summary>Variants asked to be stored again only if missing that the store still held (left as they were).</summary>
    public long Unchanged => Interlocked.Read(ref _unchanged);

    /// <summary>Chunks not queued because the queue was full.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>Bytes of containers stored.</summary>
    public long BytesStored => Interlocked.Read(ref _bytes);

    /// <summary>The last failure's reason (which variant, which chunk, what went wrong), or null if none so far.</summary>
    public string? LastError => Volatile.Read(ref _lastError);

    /// <summary>Whether the store is being left alone after repeated failures (queued chunks are skipped until then).</summary>
    public bool BackingOff => Stopwatch.GetTimestamp() < Interlocked.Read(ref _backOffUntil);

    /// <summary>Containers of <paramref name="variant"/> that failed to encode or to be stored.</summary>
    public long FailuresOf(KvVariant variant) => _variantFailures.GetValueOrDefault(variant);

    /// <summary>
    /// Copies chunk <paramref name="chunk"/>'s KV out of <paramref name="cache"/> (its positions must be filled) and
    /// queues it for storing as every ladder variant; false (and counted) when the queue is full.
    /// </summary>
    public bool TryEnqueue(ContextPlan plan, int chunk, IKvCache cache) => TryEnqueue(plan, chunk, cache, only: null, ifMissing: false);

    /// <summary>
    /// Like <see cref="TryEnqueue(ContextPlan, int, IKvCache)"/> for a chunk the store held at lookup: stores
    /// <paramref name="variant"/> (every ladder variant when null) only if the store no longer holds it, asked just before
    /// (a miss since the lookup); a variant still stored is left as it is (<see cref="Unchanged"/>).
    /// </summary>
    public bool TryEnqueueMissing(ContextPlan plan, int chunk, IKvCache cache, KvVariant? variant = null) =>
        TryEnqueue(plan, chunk, cache, variant, ifMissing: true);

    /// <summary>
    /// Stores <paramref name="variant"/> of a chunk whose stored copy is wrong (its MAC did not verify: forged, another
    /// tenant's, or sealed under a retired secret), replacing it whatever the store holds.
    /// </summary>
    public bool TryEnqueueReplacing(ContextPlan plan, int chunk, IKvCache cache, KvVariant variant) =>
        TryEnqueue(plan, chunk, cache, variant, ifMissing: false);

    /// <summary>
    /// Like <see cref="TryEnqueue(ContextPlan, int, IKvCache)"/> for a chunk's KV given in the wire layout
    /// (<see cref="ContextPlan.ChunkBytes"/> bytes of <see cref="ContextPlan.DType"/>), e.g. KV made elsewhere.
    /// </summary>
    public bool TryEnqueue(ContextPlan plan, int chunk, ReadOnlySpan<byte> kv)
    {
        ArgumentNullException.ThrowIfNull(plan);
        if (kv.Length != plan.ChunkBytes)
        {
            throw new ArgumentException($"A chunk of this plan has {plan.ChunkBytes} bytes of KV, not {kv.Length}.", nameof(kv));
        }

        byte[] copy = ArrayPool<byte>.Shared.Rent(plan.ChunkBytes);
        kv.CopyTo(copy);
        return TryEnqueue(new Job(plan, chunk, copy, null, false));
    }

    /// <summary>Completes when everything queued so far has been stored, or has failed or been skipped (never waits longer).</summary>
    public Task WhenIdleAsync()
    {
        lock (_queue)
        {
            return _idle.Task;
        }
    }

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await _worker.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }

        while (_queue.Reader.TryRead(out Job job))
        {
            ArrayPool<byte>.Shared.Return(job.Kv);
            Done();
        }

        _stop.Dispose();
    }

    private bool TryEnqueue(ContextPlan plan, int chunk, IKvCache cache, KvVariant? only, bool ifMissing)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(cache);
        ArgumentOutOfRangeException.ThrowIfNegative(chunk);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(chunk, plan.Keys.Length);
        byte[] kv = ArrayPool<byte>.Shared.Rent(plan.ChunkBytes);
        int first = chunk * plan.ChunkTokens;
        cache.Export(first, first + plan.ChunkTokens, plan.DType, kv.AsSpan(0, plan.ChunkBytes));
        return TryEnqueue(new Job(plan, chunk, kv, only, ifMissing));
    }

    private bool TryEnqueue(Job job)
    {
        lock (_queue)
        {
            if (_pending++ == 0)
            {
                _idle = NewIdle(completed: false);
            }
        }

        if (_queue.Writer.TryWrite(job))
        {
            return true;
        }

        ArrayPool<byte>.Shared.Return(job.Kv);
        Interlocked.Increment(ref _dropped);
        FetchLog.PublishDropped(_logger, job.Chunk);
        Done();
        return false;
    }

    private async Task RunAsync(CancellationToken stop)
    {
        var scratch = new Scratch(Math.Max(_ladder.Count, 1), _options.PutsInFlight);
        try
        {
            await foreach (Job job in _queue.Reader.ReadAllAsync(stop).ConfigureAwait(false))
            {
                try
                {
                    await PublishAsync(job, scratch, stop).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    // Disposed: what is left is not stored.
                }
                catch (Exception ex)
                {
                    // Anything PublishAsync did not expect is this chunk's failure alone; the worker goes on.
                    Interlocked.Add(ref _failed, job.Only is null ? _ladder.Count : 1);
                    Report($"chunk {job.Chunk}: {ex.GetType().Name}: {ex.Message}");
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(job.Kv);
                    Done();
                }
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
        finally
        {
            scratch.Dispose();
        }
    }

    private async Task PublishAsync(Job job, Scratch scratch, CancellationToken stop)
    {
        int count = job.Only is null ? _ladder.Count : 1;
        KvVariant VariantAt(int i) => job.Only ?? _ladder[i];
        if (BackingOff)
        {
            Interlocked.Add(ref _skipped, count);
            Interlocked.Add(ref _failed, count);
            return;
        }

        bool[]? stored = job.IfMissing ? await StoredAsync(job, count, stop).ConfigureAwait(false) : null;
        if (job.IfMissing && stored is null)
        {
            return; // the store could not say; counted as failed puts
        }

        ContextPlan plan = job.Plan;
        int started = 0;
        for (int i = 0; i < count; i++)
        {
            KvVariant variant = VariantAt(i);
            if (stored is not null && stored[i])
            {
                Interlocked.Increment(ref _unchanged);
                continue;
            }

            ArrayBufferWriter<byte> container = scratch.Containers[i];
            container.ResetWrittenCount();
            scratch.Parameters.ResetWrittenCount();
            scratch.Payload.ResetWrittenCount();
            try
            {
                variant.GetCodec().Encode(job.Kv.AsSpan(0, plan.ChunkBytes), plan.ChunkShape, plan.DType, plan.TokenStartOf(job.Chunk), variant.Level, scratch.Parameters, scratch.Payload);
                plan.WriteContainer(job.Chunk, variant, scratch.Parameters.WrittenSpan, scratch.Payload.WrittenSpan, container);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                Interlocked.Increment(ref _encodeFailures);
                Fail(variant, $"chunk {job.Chunk} {variant}: encoding failed: {ex.Message}");
                continue;
            }

            // Puts go out as soon as their variant is encoded, at most PutsInFlight at once, each with its deadline.
            await scratch.PutSlots.WaitAsync(stop).ConfigureAwait(false);
            scratch.Puts[started++] = PutAsync(plan.ObjectKeyOf(job.Chunk, variant), variant, scratch, i, stop);
        }

        for (int i = 0; i < started; i++)
        {
            await scratch.Puts[i].ConfigureAwait(false); // never throws: PutAsync counts its own failure
            scratch.Puts[i] = Task.CompletedTask;
        }
    }

    /// <summary>Which of the job's variants the store holds now; null (counted as failed puts) when it cannot say in time.</summary>
    private async Task<bool[]?> StoredAsync(Job job, int count, CancellationToken stop)
    {
        var keys = new ObjectKey[count];
        for (int i = 0; i < count; i++)
        {
            keys[i] = job.Plan.ObjectKeyOf(job.Chunk, job.Only ?? _ladder[i]);
        }

        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stop);
        deadline.CancelAfter(_options.PutTimeout);
        try
        {
            return await _store.ExistsAsync(keys, deadline.Token).AsTask().WaitAsync(_options.PutTimeout * 2, stop).ConfigureAwait(false);
        }
        catch (Exception ex) when (!stop.IsCancellationRequested)
        {
            Interlocked.Add(ref _putFailures, count);
            Interlocked.Add(ref _failed, count);
            StoreFailed($"chunk {job.Chunk}: asking {_store.Description} which variants it still holds failed: {Reason(ex)}");
            return null;
        }
    }

    /// <summary>Puts one container within the deadline; counts the outcome and never throws.</summary>
    private async Task PutAsync(ObjectKey key, KvVariant variant, Scratch scratch, int index, CancellationToken stop)
    {
        ReadOnlyMemory<byte> container = scratch.Containers[index].WrittenMemory;
        try
        {
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stop);
            deadline.CancelAfter(_options.PutTimeout);

            // A store that ignores its token still cannot hold the worker: the wait ends a deadline later.
            await _store.PutAsync(key, container, deadline.Token).AsTask().WaitAsync(_options.PutTimeout * 2, stop).ConfigureAwait(false);
            Interlocked.Increment(ref _published);
            Interlocked.Add(ref _bytes, container.Length);
            Interlocked.Exchange(ref _consecutivePutFailures, 0);
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            Interlocked.Increment(ref _failed);
        }
        catch (Exception ex)
        {
            if (ex is TimeoutException)
            {
                scratch.Containers[index] = new ArrayBufferWriter<byte>(); // the store may still read the old one
            }

            Interlocked.Increment(ref _putFailures);
            Fail(variant, $"{key}: {_store.Description} did not store it: {Reason(ex)}");
            StoreFailed(null);
        }
        finally
        {
            scratch.PutSlots.Release();
        }
    }

    private string Reason(Exception ex) => ex is OperationCanceledException or TimeoutException
        ? $"no answer within {_options.PutTimeout.TotalSeconds:0.###} s"
        : ex.Message;

    private void Fail(KvVariant variant, string reason)
    {
        Interlocked.Increment(ref _failed);
        _variantFailures.AddOrUpdate(variant, 1, static (_, n) => n + 1);
        Report(reason);
    }

    /// <summary>A put failed: after enough in a row, the store is left alone for the back-off.</summary>
    private void StoreFailed(string? reason)
    {
        if (reason is not null)
        {
            Report(reason);
        }

        if (Interlocked.Increment(ref _consecutivePutFailures) >= _options.FailuresBeforeBackOff && !BackingOff)
        {
            Interlocked.Exchange(ref _backOffUntil, Stopwatch.GetTimestamp() + (long)(_options.BackOff.TotalSeconds * Stopwatch.Frequency));
            FetchLog.PublishBackOff(_logger, _options.FailuresBeforeBackOff, _store.Description, _options.BackOff.TotalSeconds, LastError);
        }
    }

    private void Report(string reason)
    {
        // Logged when the reason changes, so a store failing every put writes one line, not one per container.
        if (Interlocked.Exchange(ref _lastError, reason) is not { } previous || !SameKind(previous, reason))
        {
            FetchLog.PublishFailed(_logger, reason);
        }

        static bool SameKind(string a, string b) => a.AsSpan(a.IndexOf(':') + 1).SequenceEqual(b.AsSpan(b.IndexOf(':') + 1));
    }

    private void Done()
    {
        lock (_queue)
        {
            if (--_pending == 0)
            {
                _idle.TrySetResult();
            }
        }
    }

    private static TaskCompletionSource NewIdle(bool completed)
    {
        var source = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (completed)
        {
            source.SetResult();
        }

        return source;
    }

    /// <summary>A chunk to store: every ladder variant, or only <see cref="Only"/>; with <see cref="IfMissing"/>, only what the store lacks.</summary>
    private readonly record struct Job(ContextPlan Plan, int Chunk, byte[] Kv, KvVariant? Only, bool IfMissing);

    /// <summary>One worker's buffers, reused from chunk to chunk: encoder scratch and a container per variant.</summary>
    private sealed class Scratch(int variants, int putsInFlight) : IDisposable
    {
        public ArrayBufferWriter<byte> Parameters { get; } = new();

        public ArrayBufferWriter<byte> Payload { get; } = new();

        public ArrayBufferWriter<byte>[] Containers { get; } = [.. Enumerable.Range(0, variants).Select(_ => new ArrayBufferWriter<byte>())];

        public Task[] Puts { get; } = [.. Enumerable.Range(0, variants).Select(_ => Task.CompletedTask)];

        public SemaphoreSlim PutSlots { get; } = new(putsInFlight, putsInFlight);

        public void Dispose() => PutSlots.Dispose();
    }
}
