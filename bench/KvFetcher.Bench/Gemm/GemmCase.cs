using System.Runtime.InteropServices;
using KvFetcher.Bench.Native;
using KvFetcher.Core;
using KvFetcher.Core.Numerics;
using KvFetcher.Core.Threading;
using KvFetcher.Engine.Cpu;
using KvFetcher.Engine.Model;

namespace KvFetcher.Bench.Gemm;

/// <summary>One product <c>Y[n, out] = X[n, k] · Wᵀ</c> set up for both libraries, on native 64-byte-aligned memory.</summary>
/// <remarks>
/// Our side reads W as stored (<see cref="DType"/>, e.g. bf16) through a <see cref="WeightTensor"/>; OpenBLAS gets
/// the very same values already widened to fp32, its best case. With <c>copies</c> above 1 each call uses the next
/// copy of W, so that the weights come from DRAM rather than cache (as in a decode step over all layers).
/// </remarks>
internal sealed unsafe class GemmCase : IDisposable
{
    private readonly WorkerPool _pool;
    private readonly List<nint> _allocations = [];
    private readonly WeightTensor[] _ours;
    private readonly float*[] _blas;
    private readonly float* _x;
    private readonly float* _yOurs;
    private readonly float* _yBlas;
    private int _nextOurs;
    private int _nextBlas;

    public GemmCase(int n, int k, int outFeatures, DType dtype, int copies, WorkerPool pool, int seed)
    {
        N = n;
        K = k;
        Out = outFeatures;
        _pool = pool;
        var random = new Random(seed);
        _x = Allocate((long)n * k);
        _yOurs = Allocate((long)n * outFeatures);
        _yBlas = Allocate((long)n * outFeatures);
        FillRandom(random, new Span<float>(_x, n * k), 1f);

        // Weights of a trained layer's scale (about 1/sqrt(k)), rounded to the stored dtype so both sides see
        // exactly the same numbers.
        float[] values = new float[k * outFeatures];
        FillRandom(random, values, 1f / MathF.Sqrt(k));
        FloatConversions.RoundTo(dtype, values);
        long storedBytes = (long)values.Length * dtype.SizeOf();
        _ours = new WeightTensor[copies];
        _blas = new float*[copies];
        for (int c = 0; c < copies; c++)
        {
            byte* stored = (byte*)Allocate((storedBytes + 3) / 4);
            FloatConversions.FromSingle(dtype, values, new Span<byte>(stored, (int)storedBytes));
            _ours[c] = new WeightTensor($"bench.{k}x{outFeatures}.{c}", dtype, [outFeatures, k], stored, storedBytes, this);
            _blas[c] = Allocate(values.Length);
            values.CopyTo(new Span<float>(_blas[c], values.Length));
        }

        StoredWeightBytes = storedBytes;
    }

    public int N { get; }

    public int K { get; }

    public int Out { get; }

    /// <summary>Bytes of W as our side reads them (OpenBLAS reads twice as many for bf16/fp16).</summary>
    public long StoredWeightBytes { get; }

    /// <summary>Bytes of W as OpenBLAS reads them (fp32).</summary>
    public long Fp32WeightBytes => (long)K * Out * sizeof(float);

    public double Flops => 2.0 * N * K * Out;

    public void RunOurs()
    {
        WeightTensor w = _ours[_nextOurs];
        _nextOurs = (_nextOurs + 1) % _ours.Length;
        MatMul.Multiply(new ReadOnlySpan<float>(_x, N * K), N, w, new Span<float>(_yOurs, N * Out), _pool);
    }

    public void RunBlas()
    {
        float* w = _blas[_nextBlas];
        _nextBlas = (_nextBlas + 1) % _blas.Length;
        if (N == 1)
        {
            Interop.OpenBlas.Sgemv(Interop.OpenBlas.RowMajor, Interop.OpenBlas.NoTrans, Out, K, 1f, w, K, _x, 1, 0f, _yBlas, 1);
        }
        else
        {
            Interop.OpenBlas.Sgemm(
                Interop.OpenBlas.RowMajor, Interop.OpenBlas.NoTrans, Interop.OpenBlas.Trans, N, Out, K, 1f, _x, K, w, K, 0f, _yBlas, Out);
        }
    }

    /// <summary>Largest difference between the two results, relative to the largest output magnitude.</summary>
    public double MaxRelativeDifference()
    {
        var ours = new ReadOnlySpan<float>(_yOurs, N * Out);
        var blas = new ReadOnlySpan<float>(_yBlas, N * Out);
        double maxDiff = 0;
        double maxAbs = 0;
        for (int i = 0; i < ours.Length; i++)
        {
            maxDiff = Math.Max(maxDiff, Math.Abs((double)ours[i] - blas[i]));
            maxAbs = Math.Max(maxAbs, Math.Abs((double)blas[i]));
        }

        return maxAbs == 0 ? maxDiff : maxDiff / maxAbs;
    }

    public void Dispose()
    {
        foreach (nint allocation in _allocations)
        {
            NativeMemory.AlignedFree((void*)allocation);
        }

        _allocations.Clear();
    }

    private float* Allocate(long floats)
    {
        void* memory = NativeMemory.AlignedAlloc((nuint)(floats * sizeof(float)), 64);
        _allocations.Add((nint)memory);
        return (float*)memory;
    }

    private static void FillRandom(Random random, Span<float> values, float scale)
    {
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = ((random.NextSingle() * 2f) - 1f) * scale;
        }
    }
}
