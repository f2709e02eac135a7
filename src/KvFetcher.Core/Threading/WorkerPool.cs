using System.Runtime.ExceptionServices;

namespace KvFetcher.Core.Threading;

/// <summary>One item of work that a <see cref="WorkerPool"/> runs for every index of a range.</summary>
public interface IParallelWork
{
    /// <summary>Runs the work for one index; called concurrently for different indices.</summary>
    void Execute(int index);
}

/// <summary>
/// A fixed set of worker threads that run an <see cref="IParallelWork"/> over an index range, with the calling
/// thread taking part. Unlike <c>Parallel.For</c> a dispatch allocates nothing, so kernels can use it once per
/// matrix product without garbage per token. Dispatches are serialized; a dispatch from inside a worker runs inline.
/// Idle workers spin for ~50 µs before they block, so back-to-back dispatches (a decode step) do not pay a wake-up.
/// </summary>
public sealed class WorkerPool : IDisposable
{
    /// <summary>How long an idle worker spins for the next dispatch before it blocks (waking costs ~50-100 µs).</summary>
    private static readonly long s_spinTicks = System.Diagnostics.Stopwatch.Frequency / 20_000;

    private static readonly Lazy<WorkerPool> s_shared = new(() => new WorkerPool(Environment.ProcessorCount));

    [ThreadStatic]
    private static bool t_insideWork;

    private readonly Thread[] _threads;
    private readonly ManualResetEventSlim _wake = new(false);
    private readonly ManualResetEventSlim _done = new(false);
    private readonly Lock _dispatchLock = new();
    private IParallelWork? _work;
    private bool _onEachThread;
    private int _count;
    private int _next;
    private int _active;
    private int _generation;
    private ExceptionDispatchInfo? _failure;
    private long _workerAllocatedBytes;
    private volatile bool _disposed;

    /// <summary>Creates a pool that runs work on <paramref name="concurrency"/> threads, the caller included.</summary>
    public WorkerPool(int concurrency)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(concurrency, 1);
        Concurrency = concurrency;

        // The events create their wait lock on the first blocking wait; do it now, so that a dispatch that happens
        // to block for the first time later allocates nothing.
        _done.Wait(1);
        _wake.Wait(1);
        _threads = new Thread[concurrency - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            _threads[i] = new Thread(WorkerLoop) { IsBackground = true, Name = $"kvfetch-worker-{i}" };
            _threads[i].Start(i + 1);
        }
    }

    /// <summary>A process-wide pool with one thread per processor.</summary>
    public static WorkerPool Shared => s_shared.Value;

    /// <summary>Threads that run work, the calling thread included.</summary>
    public int Concurrency { get; }

    /// <summary>
    /// Bytes the pool's own threads have allocated while running dispatched work, since the pool started (the caller's
    /// share is on the caller's thread): with <see cref="GC.GetAllocatedBytesForCurrentThread"/> on the caller, it
    /// tells whether a parallel operation allocates anywhere.
    /// </summary>
    public long WorkerAllocatedBytes => Interlocked.Read(ref _workerAllocatedBytes);

    /// <summary>Runs <paramref name="work"/> for every index in [0, <paramref name="count"/>) and waits for all.</summary>
    public void For(int count, IParallelWork work)
    {
        ArgumentNullException.ThrowIfNull(work);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (count <= 0)
        {
            return;
        }

        if (count == 1 || _threads.Length == 0 || t_insideWork)
        {
            for (int i = 0; i < count; i++)
            {
                work.Execute(i);
            }

            return;
        }

        lock (_dispatchLock)
        {
            Dispatch(work, count);
        }
    }

    /// <summary>One dispatch; the caller holds the dispatch lock.</summary>
    private void Dispatch(IParallelWork work, int count)
    {
        // Every worker takes part in every dispatch (those that find no index left just check out), so the
        // dispatch is complete when all of them and the caller have checked out.
        _work = work;
        _count = count;
        _failure = null;
        Volatile.Write(ref _next, 0);
        Volatile.Write(ref _active, _threads.Length + 1);
        _done.Reset();
        Interlocked.Increment(ref _generation);
        _wake.Set();
        RunShare(0);
        _done.Wait();
        _wake.Reset();
        _work = null;
        _failure?.Throw();
    }

    /// <summary>
    /// Runs <c>work.Execute(t)</c> exactly once on each of the pool's threads, t in [0, <see cref="Concurrency"/>):
    /// 0 on the caller, the rest on the workers. For thread-local set-up (scratch buffers) made before it is needed,
    /// so that no later dispatch allocates on a thread that happens to take part for the first time.
    /// </summary>
    public void OnEachThread(IParallelWork work)
    {
        ArgumentNullException.ThrowIfNull(work);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_threads.Length == 0 || t_insideWork)
        {
            work.Execute(0);
            return;
        }

        lock (_dispatchLock)
        {
            _onEachThread = true;
            try
            {
                Dispatch(work, Concurrency);
            }
            finally
            {
                _onEachThread = false;
            }
        }
    }

    private void WorkerLoop(object? threadIndex)
    {
        int index = (int)threadIndex!;
        int seen = 0;
        while (true)
        {
            // Spin briefly (decode dispatches come back within microseconds), then block.
            long spinUntil = System.Diagnostics.Stopwatch.GetTimestamp() + s_spinTicks;
            while (Volatile.Read(ref _generation) == seen)
            {
                if (System.Diagnostics.Stopwatch.GetTimestamp() < spinUntil)
                {
                    Thread.SpinWait(20);
                }
                else
                {
                    _wake.Wait();
                }
            }

            if (_disposed)
            {
                return;
            }

            seen = Volatile.Read(ref _generation);
            RunShare(index);
        }
    }

    private void RunShare(int threadIndex)
    {
        IParallelWork work = _work!;
        int count = _count;
        long allocated = threadIndex == 0 ? 0 : GC.GetAllocatedBytesForCurrentThread();
        t_insideWork = true;
        try
        {
            if (_onEachThread)
            {
                work.Execute(threadIndex);
                return;
            }

            int index;
            while ((index = Interlocked.Increment(ref _next) - 1) < count)
            {
                work.Execute(index);
            }
        }
        catch (Exception ex)
        {
            Interlocked.CompareExchange(ref _failure, ExceptionDispatchInfo.Capture(ex), null);
            Volatile.Write(ref _next, count);
        }
        finally
        {
            t_insideWork = false;

            // A worker's allocations are counted before it checks out, so the caller sees them once the dispatch ends.
            allocated = threadIndex == 0 ? 0 : GC.GetAllocatedBytesForCurrentThread() - allocated;
            if (allocated != 0)
            {
                Interlocked.Add(ref _workerAllocatedBytes, allocated);
            }

            if (Interlocked.Decrement(ref _active) == 0)
            {
                _done.Set();
            }
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        lock (_dispatchLock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            Interlocked.Increment(ref _generation);
            _wake.Set();
        }

        foreach (Thread thread in _threads)
        {
            thread.Join();
        }

        _wake.Dispose();
        _done.Dispose();
    }
}
