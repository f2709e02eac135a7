using System.Buffers;
using System.Threading.Channels;
using KvFetcher.Engine;
using KvFetcher.Store;

namespace KvFetcher.Fetch.Publishing;

/// <summary>
/// Stores computed chunks in the background: the request thread only copies a chunk's KV out of the cache (about a
/// millisecond per chunk here); a worker encodes every ladder variant and puts each container. A full queue drops the
/// chunk (counted), a failing store is counted, and neither ever reaches the request. Puts are atomic in every store,
/// so a failed write never leaves a visible partial object.
/// </summary>
public sealed class KvPublisher : IAsyncDisposable
{
    private readonly IKvStore _store;
    private readonly IReadOnlyList<KvVariant> _ladder;
    private readonly Channel<Job> _queue;
    private readonly Task _worker;
    private readonly CancellationTokenSource _stop = new();
    private int _pending;
    private long _published;
    private long _failed;
    private long _dropped;
    private long _bytes;
    private TaskCompletionSource _idle = NewIdle(completed: true);

    /// <param name="store">Where containers go.</param>
    /// <param name="ladder">The variants stored per chunk.</param>
    /// <param name="maxQueuedChunks">Chunks waiting beyond this are dropped (and counted).</param>
    /// <param name="workers">Chunks encoded at once (one by default, so the background work takes one core from the engine).</param>
    public KvPublisher(IKvStore store, IReadOnlyList<KvVariant> ladder, int maxQueuedChunks = 256, int workers = 1)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(ladder);
        ArgumentOutOfRangeException.ThrowIfLessThan(workers, 1);
        _store = store;
        _ladder = ladder;
        _queue = Channel.CreateBounded<Job>(new BoundedChannelOptions(maxQueuedChunks) { SingleReader = workers == 1, FullMode = BoundedChannelFullMode.Wait });
        _worker = Task.WhenAll(Enumerable.Range(0, workers).Select(_ =>
            Task.Factory.StartNew(() => RunAsync(_stop.Token), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default).Unwrap()));
    }

    /// <summary>Variant containers stored.</summary>
    public long Published => Interlocked.Read(ref _published);

    /// <summary>Variant containers the store refused or failed to take.</summary>
    public long Failed => Interlocked.Read(ref _failed);

    /// <summary>Chunks not queued because the queue was full.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>Bytes of containers stored.</summary>
    public long BytesStored => Interlocked.Read(ref _bytes);

    /// <summary>
    /// Copies chunk <paramref name="chunk"/>'s KV out of <paramref name="cache"/> (its positions must be filled) and
    /// queues it for storing; false (and counted) when the queue is full.
    /// </summary>
    public bool TryEnqueue(ContextPlan plan, int chunk, IKvCache cache)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(cache);
        byte[] kv = ArrayPool<byte>.Shared.Rent(plan.ChunkBytes);
        int first = chunk * plan.ChunkTokens;
        cache.Export(first, first + plan.ChunkTokens, plan.DType, kv.AsSpan(0, plan.ChunkBytes));
        return TryEnqueue(plan, chunk, kv);
    }

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
        return TryEnqueue(plan, chunk, copy);
    }

    private bool TryEnqueue(ContextPlan plan, int chunk, byte[] kv)
    {
        lock (_queue)
        {
            if (_pending++ == 0)
            {
                _idle = NewIdle(completed: false);
            }
        }

        if (_queue.Writer.TryWrite(new Job(plan, chunk, kv)))
        {
            return true;
        }

        ArrayPool<byte>.Shared.Return(kv);
        Interlocked.Increment(ref _dropped);
        Done();
        return false;
    }

    /// <summary>Completes when everything queued so far has been stored (or has failed).</summary>
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
        }

        _stop.Dispose();
    }

    private async Task RunAsync(CancellationToken stop)
    {
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        var container = new ArrayBufferWriter<byte>();
        await foreach (Job job in _queue.Reader.ReadAllAsync(stop).ConfigureAwait(false))
        {
            try
            {
                foreach (KvVariant variant in _ladder)
                {
                    parameters.ResetWrittenCount();
                    payload.ResetWrittenCount();
                    container.ResetWrittenCount();
                    ContextPlan plan = job.Plan;
                    variant.GetCodec().Encode(job.Kv.AsSpan(0, plan.ChunkBytes), plan.ChunkShape, plan.DType, variant.Level, parameters, payload);
                    plan.WriteContainer(job.Chunk, variant, parameters.WrittenSpan, payload.WrittenSpan, container);
                    try
                    {
                        await _store.PutAsync(plan.ObjectKeyOf(job.Chunk, variant), container.WrittenMemory, stop).ConfigureAwait(false);
                        Interlocked.Increment(ref _published);
                        Interlocked.Add(ref _bytes, container.WrittenCount);
                    }
                    catch (KvStoreException)
                    {
                        Interlocked.Increment(ref _failed);
                    }
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(job.Kv);
                Done();
            }
        }
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

    private readonly record struct Job(ContextPlan Plan, int Chunk, byte[] Kv);
}
