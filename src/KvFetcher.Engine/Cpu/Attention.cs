using System.Numerics;
using System.Numerics.Tensors;
using KvFetcher.Core.Threading;

namespace KvFetcher.Engine.Cpu;

/// <summary>
/// Causal grouped-query attention of a chunk of queries over the KV cache, parallel over (head, query block). Each
/// query's scores, softmax and weighted sum run in a fixed order, so a query gives the same result whether it was
/// computed in a chunk of 1 or of 4096.
/// </summary>
internal sealed unsafe class Attention : IParallelWork
{
    private const int QueryBlock = 32;

    [ThreadStatic]
    private static float[]? t_scores;

    [ThreadStatic]
    private static float[]? t_queries;

    private WorkerPool? _pool;

    private float* _q;
    private float* _output;
    private float* _keys;
    private float* _values;
    private int _n;
    private int _start;
    private readonly int _heads;
    private readonly int _group;
    private readonly int _headDim;
    private int _capacity;
    private int _window;
    private int _blocks;
    private readonly float _scale;

    /// <summary>
    /// This thread's query block and score rows for keys up to <paramref name="positions"/>. The score rows hold at
    /// least 4096 positions and grow to the next power of two, so a decode that moves past a length allocates once
    /// per doubling, not once per step.
    /// </summary>
    private static (float[] Queries, float[] Scores) ThreadScratch(int headDim, int positions)
    {
        float[] queries = t_queries is { } q && q.Length >= QueryBlock * headDim ? q : (t_queries = new float[QueryBlock * headDim]);
        int rowLength = (int)Math.Min(BitOperations.RoundUpToPowerOf2((uint)Math.Max(positions, 4096)), int.MaxValue / QueryBlock);
        float[] scores = t_scores is { } s && s.Length >= QueryBlock * Math.Max(positions, 4096) ? s : (t_scores = new float[QueryBlock * rowLength]);
        return (queries, scores);
    }

    /// <summary>Makes every thread of <paramref name="pool"/> its scratch for up to 4096 positions (no first step allocates).</summary>
    public static void PrepareThreads(WorkerPool pool, int headDim) => pool.OnEachThread(new ScratchPreparation(headDim));

    private sealed class ScratchPreparation(int headDim) : IParallelWork
    {
        public void Execute(int index) => _ = ThreadScratch(headDim, 0);
    }

    public Attention(int heads, int kvHeads, int headDim)
    {
        _heads = heads;
        _group = heads / kvHeads;
        _headDim = headDim;
        _scale = 1f / MathF.Sqrt(headDim);
    }

    /// <summary>
    /// output[i, h, :] = softmax(q[i, h] · K[0..p]ᵀ · scale) · V[0..p] for the queries of positions
    /// p = start + i, i in [0, n), over keys (p - window, p] when the layer has a sliding window. q and output are
    /// [n, heads, headDim]; keys/values are one layer of the cache.
    /// </summary>
    public void Run(ReadOnlySpan<float> q, int n, int start, KvCache cache, int layer, int? window, Span<float> output, WorkerPool pool)
    {
        fixed (float* pq = q)
        fixed (float* po = output)
        fixed (float* pk = cache.LayerKeys(layer))
        fixed (float* pv = cache.LayerValues(layer))
        {
            _q = pq;
            _output = po;
            _keys = pk;
            _values = pv;
            _n = n;
            _start = start;
            _window = window ?? int.MaxValue;
            _capacity = cache.Capacity;
            _pool = pool;
            _blocks = (n + QueryBlock - 1) / QueryBlock;
            try
            {
                pool.For(_heads * _blocks, this);
            }
            finally
            {
                _q = _output = _keys = _values = null;
            }
        }
    }

    public void Execute(int index)
    {
        // Longest blocks (the last queries) first, so the pool's tail is short.
        int block = _blocks - 1 - (index / _heads);
        int head = index % _heads;
        int kvHead = head / _group;
        int headDim = _headDim;
        int rowStride = _heads * headDim;
        var keys = new ReadOnlySpan<float>(_keys + ((long)kvHead * _capacity * headDim), _capacity * headDim);
        var values = new ReadOnlySpan<float>(_values + ((long)kvHead * _capacity * headDim), _capacity * headDim);
        int first = block * QueryBlock;
        int rows = Math.Min(first + QueryBlock, _n) - first;
        int lo = Math.Max(0, _start + first - _window + 1);
        int keyCount = _start + first + rows - lo;

        (float[] queries, float[] scores) = ThreadScratch(headDim, _start + _n);

        // Scores of the block's queries against every key any of them sees, as one product on the packed GEMM: each
        // score is one FMA chain over the head dimension, whatever the block, so chunking never changes a bit.
        for (int r = 0; r < rows; r++)
        {
            new ReadOnlySpan<float>(_q + ((long)(first + r) * rowStride) + (head * headDim), headDim).CopyTo(queries.AsSpan(r * headDim));
        }

        MatMul.Multiply(queries.AsSpan(0, rows * headDim), rows, headDim, keys.Slice(lo * headDim, keyCount * headDim), keyCount, scores.AsSpan(0, rows * keyCount), _pool!);

        for (int r = 0; r < rows; r++)
        {
            int position = _start + first + r;
            int rowLo = Math.Max(0, position - _window + 1);
            int count = position - rowLo + 1;
            Span<float> row = scores.AsSpan((r * keyCount) + (rowLo - lo), count);
            TensorPrimitives.Multiply(row, _scale, row);
            float max = TensorPrimitives.Max(row);
            float inverseSum = 1f / Kernels.ExpSubtractMaxAndSum(row, max);
            var output = new Span<float>(_output + ((long)(first + r) * rowStride) + (head * headDim), headDim);
            output.Clear();
            for (int j = 0; j < count; j++)
            {
                Kernels.MultiplyAdd(values.Slice((rowLo + j) * headDim, headDim), row[j] * inverseSum, output);
            }
        }
    }
}
