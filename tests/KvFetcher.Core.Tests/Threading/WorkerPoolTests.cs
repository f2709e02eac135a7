using KvFetcher.Core.Threading;

namespace KvFetcher.Core.Tests.Threading;

public class WorkerPoolTests
{
    private sealed class CountingWork : IParallelWork
    {
        public int[] Hits { get; } = new int[1000];

        public void Execute(int index) => Interlocked.Increment(ref Hits[index]);
    }

    private sealed class FailingWork : IParallelWork
    {
        public void Execute(int index)
        {
            if (index == 3)
            {
                throw new InvalidOperationException("boom at 3");
            }
        }
    }

    [Fact]
    public void For_RunsEveryIndexExactlyOnce()
    {
        using var pool = new WorkerPool(4);
        var work = new CountingWork();
        for (int round = 0; round < 50; round++)
        {
            pool.For(work.Hits.Length, work);
        }

        Assert.All(work.Hits, h => Assert.Equal(50, h));
    }

    [Fact]
    public void For_WorkThrows_ExceptionReachesCaller_PoolStillWorks()
    {
        using var pool = new WorkerPool(3);
        InvalidOperationException ex = Assert.Throws<InvalidOperationException>(() => pool.For(100, new FailingWork()));
        Assert.Equal("boom at 3", ex.Message);
        var work = new CountingWork();
        pool.For(10, work);
        Assert.Equal(10, work.Hits.Sum());
    }

    [Fact]
    public void Dispose_SingleThreadPool_DoesNotThrow()
    {
        var pool = new WorkerPool(1);
        var work = new CountingWork();
        pool.For(5, work);
        pool.Dispose();
        pool.Dispose();
        Assert.Equal(5, work.Hits.Sum());
        Assert.Throws<ObjectDisposedException>(() => pool.For(1, work));
    }

    [Fact]
    public void For_AfterWorkersBlocked_StillRunsAll()
    {
        using var pool = new WorkerPool(3);
        var work = new CountingWork();
        for (int round = 0; round < 5; round++)
        {
            Thread.Sleep(5); // past the spin window: workers are blocked and must be woken
            pool.For(100, work);
        }

        Assert.Equal(500, work.Hits.Sum());
    }

    [Fact]
    public void For_SteadyState_AllocatesNothing()
    {
        using var pool = new WorkerPool(2);
        var work = new CountingWork();
        for (int i = 0; i < 200; i++)
        {
            pool.For(64, work); // warm-up: the events allocate their wait objects lazily, once
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        long workersBefore = pool.WorkerAllocatedBytes;
        for (int i = 0; i < 1000; i++)
        {
            pool.For(64, work);
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(0, pool.WorkerAllocatedBytes - workersBefore);
    }

    [Fact]
    public void WorkerAllocatedBytes_WorkThatAllocates_CountsTheWorkersShare()
    {
        using var pool = new WorkerPool(2);
        var work = new AllocatingWork();
        // Until a worker has run at least one item (on a busy machine the caller can take all 64 of a round, and the
        // worker's own first wait allocates a couple of hundred bytes that must not end the loop).
        for (int i = 0; i < 200 && pool.WorkerAllocatedBytes < 1024; i++)
        {
            pool.For(64, work);
        }

        Assert.True(pool.WorkerAllocatedBytes >= 1024, $"{pool.WorkerAllocatedBytes} bytes counted");
    }

    private sealed class AllocatingWork : IParallelWork
    {
        public object? Last { get; private set; }

        public void Execute(int index)
        {
            Last = new byte[1024];
            Thread.SpinWait(100);
        }
    }

    [Fact]
    public void OnEachThread_RunsEveryIndexOnceOnItsOwnThread()
    {
        using var pool = new WorkerPool(3);
        var work = new ThreadRecordingWork(3);
        for (int round = 0; round < 50; round++)
        {
            pool.OnEachThread(work);
            Assert.Equal([1, 1, 1], work.Hits);
            Assert.Equal(Environment.CurrentManagedThreadId, work.Threads[0]);
            Assert.Equal(3, work.Threads.Distinct().Count());
            work.Reset();
        }

        pool.For(100, work); // an ordinary dispatch afterwards still runs every index
        Assert.Equal(100, work.Total);
    }

    private sealed class ThreadRecordingWork(int threads) : IParallelWork
    {
        public int[] Hits { get; } = new int[threads];

        public int[] Threads { get; } = new int[threads];

        public int Total => _total;

        private int _total;

        public void Execute(int index)
        {
            Interlocked.Increment(ref _total);
            if (index < Hits.Length)
            {
                Interlocked.Increment(ref Hits[index]);
                Threads[index] = Environment.CurrentManagedThreadId;
            }
        }

        public void Reset()
        {
            Array.Clear(Hits);
            Array.Clear(Threads);
            _total = 0;
        }
    }
}
