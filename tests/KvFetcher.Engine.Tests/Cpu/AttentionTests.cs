using KvFetcher.Core.Threading;
using KvFetcher.Engine.Cpu;

namespace KvFetcher.Engine.Tests.Cpu;

public sealed class AttentionTests
{
    [Fact]
    public void Run_DecodeStepsPastTheScratchLength_AllocateOncePerDoublingPerThread()
    {
        const int Heads = 4;
        const int KvHeads = 2;
        const int HeadDim = 16;
        const int Steps = 200;
        var cache = new KvCache(1, KvHeads, HeadDim, 4096 + Steps + 8);
        using var pool = new WorkerPool(2);
        var attention = new Attention(Heads, KvHeads, HeadDim);
        Attention.PrepareThreads(pool, HeadDim);
        float[] q = new float[Heads * HeadDim];
        float[] output = new float[Heads * HeadDim];
        q.AsSpan().Fill(0.1f);

        long before = GC.GetAllocatedBytesForCurrentThread();
        long workersBefore = pool.WorkerAllocatedBytes;
        for (int position = 4096; position < 4096 + Steps; position++)
        {
            attention.Run(q, 1, position, cache, 0, null, output, pool);
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before + pool.WorkerAllocatedBytes - workersBefore;

        // Each thread grows its score rows once, to 8192 positions (32 query rows of fp32); growing them per step
        // to the exact length would cost about 200 times that (the slack is for small one-time objects).
        long oneGrowth = 32L * 8192 * sizeof(float);
        Assert.InRange(allocated, 0, pool.Concurrency * oneGrowth * 5 / 4);
    }
}
