using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using KvFetcher.Core;
using KvFetcher.Core.Threading;

namespace KvFetcher.Engine.Cpu;

internal static unsafe partial class MatMul
{
    /// <summary>
    /// Smaller GEMVs run on the calling thread alone: below about this many weight bytes waking the pool's
    /// threads (a few µs here) costs more than it saves (e.g. 384x384 bf16: 5.0 µs alone, 7.4 µs on two threads;
    /// 384x1024: 11.9 µs alone, 8.9 µs on two).
    /// </summary>
    private const long GemvParallelMinBytes = 512 * 1024;

    /// <summary>A parallel GEMV task covers at least this many weight bytes.</summary>
    private const long GemvMinBytesPerTask = 64 * 1024;

    /// <summary>GEMV tasks per thread: a few, so that a thread that starts late (waking up) gets less.</summary>
    private const int GemvTasksPerThread = 4;

    [ThreadStatic]
    private static GemvWork? t_gemvWork;

    [ThreadStatic]
    private static float[]? t_gemvPairs;

    private static void RunGemv(MatMulIsa isa, float* x, int n, int k, byte* w, DType dtype, int outFeatures, float* y, float* bias, WorkerPool pool)
    {
        // Each task owns a range of output features (rows of W), at least GemvMinBytesPerTask of them.
        long rowBytes = (long)k * dtype.SizeOf();
        long weightBytes = outFeatures * rowBytes;
        long byTasks = weightBytes < GemvParallelMinBytes ? 1 : weightBytes / GemvMinBytesPerTask;
        int tasks = (int)Math.Min(Math.Min(byTasks, (long)pool.Concurrency * GemvTasksPerThread), outFeatures);
        int rowsPerTask = (outFeatures + tasks - 1) / tasks;
        tasks = (outFeatures + rowsPerTask - 1) / rowsPerTask;

        // bf16 rows are read as pairs (see DotBFloat16Pairs512); x is de-interleaved to match, once per call.
        float* pairs = null;
        if (dtype == DType.BFloat16 && isa != MatMulIsa.Scalar)
        {
            pairs = DeinterleavedInput(x, n, k, isa == MatMulIsa.Vector512 ? 32 : 16);
        }

        GemvWork work = RentWork(ref t_gemvWork);
        try
        {
            work.Set(isa, x, n, k, w, dtype, outFeatures, y, bias, rowsPerTask, pairs);
            pool.For(tasks, work);
        }
        finally
        {
            work.InUse = false;
        }
    }

    /// <summary>
    /// Copies x into this thread's pinned scratch with each block of <paramref name="block"/> values split into
    /// its even-indexed then its odd-indexed elements (the tail past the last whole block is left out).
    /// </summary>
    private static float* DeinterleavedInput(float* x, int n, int k, int block)
    {
        int length = (n * k) + 16;
        float[]? scratch = t_gemvPairs;
        if (scratch is null || scratch.Length < length)
        {
            // Grows to the largest input seen, then is reused: no allocation per call after warm-up.
            scratch = t_gemvPairs = GC.AllocateUninitializedArray<float>(Math.Max(length, 4096), pinned: true);
        }

        // 64-byte aligned: a 512-bit load that splits a cache line costs two.
        float* pairs = AlignTo64(scratch);
        int half = block / 2;
        for (int r = 0; r < n; r++)
        {
            float* src = x + ((nint)r * k);
            float* dst = pairs + ((nint)r * k);
            for (int c = 0; c + block <= k; c += block)
            {
                for (int i = 0; i < half; i++)
                {
                    dst[c + i] = src[c + (2 * i)];
                    dst[c + half + i] = src[c + (2 * i) + 1];
                }
            }
        }

        return pairs;
    }

    /// <summary>The calling thread's cached work object, or a fresh one if that is busy (a nested call).</summary>
    private static T RentWork<T>(ref T? cache)
        where T : MatMulWork, new()
    {
        T work = cache is { InUse: false } cached ? cached : new T();
        cache ??= work;
        work.InUse = true;
        return work;
    }

    /// <summary>Arguments of one product, stored as pointers so that pooled threads can reach them.</summary>
    private abstract class MatMulWork : IParallelWork
    {
        public bool InUse;
        protected MatMulIsa _isa;
        protected float* _x;
        protected int _n;
        protected int _k;
        protected byte* _w;
        protected DType _dtype;
        protected int _outFeatures;
        protected float* _y;
        protected float* _bias;

        protected void SetCommon(MatMulIsa isa, float* x, int n, int k, byte* w, DType dtype, int outFeatures, float* y, float* bias)
        {
            _isa = isa;
            _x = x;
            _n = n;
            _k = k;
            _w = w;
            _dtype = dtype;
            _outFeatures = outFeatures;
            _y = y;
            _bias = bias;
        }

        public abstract void Execute(int index);
    }

    private sealed class GemvWork : MatMulWork
    {
        private int _rowsPerTask;
        private float* _pairs;

        public void Set(MatMulIsa isa, float* x, int n, int k, byte* w, DType dtype, int outFeatures, float* y, float* bias, int rowsPerTask, float* pairs)
        {
            SetCommon(isa, x, n, k, w, dtype, outFeatures, y, bias);
            _rowsPerTask = rowsPerTask;
            _pairs = pairs;
        }

        public override void Execute(int index)
        {
            int o0 = index * _rowsPerTask;
            int o1 = Math.Min(_outFeatures, o0 + _rowsPerTask);
            switch (_dtype)
            {
                case DType.BFloat16 when _pairs != null:
                    GemvRangeBFloat16Pairs(o0, o1);
                    break;
                case DType.BFloat16:
                    GemvRange<BFloat16Load>(o0, o1);
                    break;
                case DType.Float16:
                    GemvRange<Float16Load>(o0, o1);
                    break;
                default:
                    GemvRange<Float32Load>(o0, o1);
                    break;
            }
        }

        /// <summary>
        /// Output features [o0, o1): each row of W is streamed once, front to back (one sequential stream reads
        /// memory about twice as fast here as several interleaved rows), and dotted with every row of x while it
        /// is in L1.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void GemvRange<TLoad>(int o0, int o1)
            where TLoad : struct, IWeightLoad
        {
            nint rowBytes = (nint)_k * TLoad.ElementSize;
            for (int o = o0; o < o1; o++)
            {
                byte* wo = _w + (o * rowBytes);
                float bias = _bias != null ? _bias[o] : 0f;
                for (int r = 0; r < _n; r++)
                {
                    float* xr = _x + ((nint)r * _k);
                    float dot = _isa switch
                    {
                        MatMulIsa.Vector512 => DotVector512<TLoad>(xr, wo, _k),
                        MatMulIsa.Vector256 => DotVector256<TLoad>(xr, wo, _k),
                        _ => DotScalar<TLoad>(xr, wo, _k),
                    };
                    _y[((nint)r * _outFeatures) + o] = dot + bias;
                }
            }
        }

        /// <summary>As <see cref="GemvRange{TLoad}"/> for bf16 weights, with x de-interleaved into <c>_pairs</c>.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void GemvRangeBFloat16Pairs(int o0, int o1)
        {
            nint rowBytes = (nint)_k * sizeof(ushort);
            for (int o = o0; o < o1; o++)
            {
                byte* wo = _w + (o * rowBytes);
                float bias = _bias != null ? _bias[o] : 0f;
                for (int r = 0; r < _n; r++)
                {
                    nint offset = (nint)r * _k;
                    float dot = _isa == MatMulIsa.Vector512
                        ? DotBFloat16Pairs512((uint*)wo, _pairs + offset, _x + offset, _k)
                        : DotBFloat16Pairs256((uint*)wo, _pairs + offset, _x + offset, _k);
                    _y[((nint)r * _outFeatures) + o] = dot + bias;
                }
            }
        }
    }

    /// <summary>
    /// x · w for a bf16 row read 32 values at a time as 16 little-endian pairs: <c>pair &lt;&lt; 16</c> is the
    /// even element and <c>pair &amp; 0xFFFF0000</c> the odd one, both exact fp32, with no shuffles. They meet
    /// <paramref name="pairs"/> (x de-interleaved per 32-block); the tail past the last block uses x itself.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float DotBFloat16Pairs512(uint* w, float* pairs, float* x, int k)
    {
        Vector512<uint> high = Vector512.Create(0xFFFF_0000u);
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        nint p = 0;
        for (; p <= k - 64; p += 64)
        {
            Vector512<uint> v0 = Vector512.Load(w + (p / 2));
            Vector512<uint> v1 = Vector512.Load(w + (p / 2) + 16);
            a0 = Vector512.FusedMultiplyAdd((v0 << 16).AsSingle(), Vector512.Load(pairs + p), a0);
            a1 = Vector512.FusedMultiplyAdd((v0 & high).AsSingle(), Vector512.Load(pairs + p + 16), a1);
            a2 = Vector512.FusedMultiplyAdd((v1 << 16).AsSingle(), Vector512.Load(pairs + p + 32), a2);
            a3 = Vector512.FusedMultiplyAdd((v1 & high).AsSingle(), Vector512.Load(pairs + p + 48), a3);
        }

        if (p <= k - 32)
        {
            Vector512<uint> v0 = Vector512.Load(w + (p / 2));
            a0 = Vector512.FusedMultiplyAdd((v0 << 16).AsSingle(), Vector512.Load(pairs + p), a0);
            a1 = Vector512.FusedMultiplyAdd((v0 & high).AsSingle(), Vector512.Load(pairs + p + 16), a1);
            p += 32;
        }

        float s = Vector512.Sum((a0 + a1) + (a2 + a3));
        for (; p < k; p++)
        {
            s = MathF.FusedMultiplyAdd(BFloat16Load.Scalar((byte*)w, p), x[p], s);
        }

        return s;
    }

    /// <summary>The 256-bit twin of <see cref="DotBFloat16Pairs512"/> (x de-interleaved per 16-block).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float DotBFloat16Pairs256(uint* w, float* pairs, float* x, int k)
    {
        Vector256<uint> high = Vector256.Create(0xFFFF_0000u);
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        nint p = 0;
        for (; p <= k - 32; p += 32)
        {
            Vector256<uint> v0 = Vector256.Load(w + (p / 2));
            Vector256<uint> v1 = Vector256.Load(w + (p / 2) + 8);
            a0 = Vector256.FusedMultiplyAdd((v0 << 16).AsSingle(), Vector256.Load(pairs + p), a0);
            a1 = Vector256.FusedMultiplyAdd((v0 & high).AsSingle(), Vector256.Load(pairs + p + 8), a1);
            a2 = Vector256.FusedMultiplyAdd((v1 << 16).AsSingle(), Vector256.Load(pairs + p + 16), a2);
            a3 = Vector256.FusedMultiplyAdd((v1 & high).AsSingle(), Vector256.Load(pairs + p + 24), a3);
        }

        if (p <= k - 16)
        {
            Vector256<uint> v0 = Vector256.Load(w + (p / 2));
            a0 = Vector256.FusedMultiplyAdd((v0 << 16).AsSingle(), Vector256.Load(pairs + p), a0);
            a1 = Vector256.FusedMultiplyAdd((v0 & high).AsSingle(), Vector256.Load(pairs + p + 8), a1);
            p += 16;
        }

        float s = Vector256.Sum((a0 + a1) + (a2 + a3));
        for (; p < k; p++)
        {
            s = MathF.FusedMultiplyAdd(BFloat16Load.Scalar((byte*)w, p), x[p], s);
        }

        return s;
    }

    /// <summary>x · w over k elements, four independent accumulators (16 lanes each) to cover the FMA latency.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float DotVector512<TLoad>(float* x, byte* w, int k)
        where TLoad : struct, IWeightLoad
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        nint p = 0;
        for (; p <= k - 64; p += 64)
        {
            a0 = Vector512.FusedMultiplyAdd(TLoad.Load16(w, p), Vector512.Load(x + p), a0);
            a1 = Vector512.FusedMultiplyAdd(TLoad.Load16(w, p + 16), Vector512.Load(x + p + 16), a1);
            a2 = Vector512.FusedMultiplyAdd(TLoad.Load16(w, p + 32), Vector512.Load(x + p + 32), a2);
            a3 = Vector512.FusedMultiplyAdd(TLoad.Load16(w, p + 48), Vector512.Load(x + p + 48), a3);
        }

        for (; p <= k - 16; p += 16)
        {
            a0 = Vector512.FusedMultiplyAdd(TLoad.Load16(w, p), Vector512.Load(x + p), a0);
        }

        float s = Vector512.Sum((a0 + a1) + (a2 + a3));
        for (; p < k; p++)
        {
            s = MathF.FusedMultiplyAdd(TLoad.Scalar(w, p), x[p], s);
        }

        return s;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float DotVector256<TLoad>(float* x, byte* w, int k)
        where TLoad : struct, IWeightLoad
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        nint p = 0;
        for (; p <= k - 32; p += 32)
        {
            a0 = Vector256.FusedMultiplyAdd(TLoad.Load8(w, p), Vector256.Load(x + p), a0);
            a1 = Vector256.FusedMultiplyAdd(TLoad.Load8(w, p + 8), Vector256.Load(x + p + 8), a1);
            a2 = Vector256.FusedMultiplyAdd(TLoad.Load8(w, p + 16), Vector256.Load(x + p + 16), a2);
            a3 = Vector256.FusedMultiplyAdd(TLoad.Load8(w, p + 24), Vector256.Load(x + p + 24), a3);
        }

        for (; p <= k - 8; p += 8)
        {
            a0 = Vector256.FusedMultiplyAdd(TLoad.Load8(w, p), Vector256.Load(x + p), a0);
        }

        float s = Vector256.Sum((a0 + a1) + (a2 + a3));
        for (; p < k; p++)
        {
            s = MathF.FusedMultiplyAdd(TLoad.Scalar(w, p), x[p], s);
        }

        return s;
    }

    private static float DotScalar<TLoad>(float* x, byte* w, int k)
        where TLoad : struct, IWeightLoad
    {
        float s = 0;
        for (nint p = 0; p < k; p++)
        {
            s += TLoad.Scalar(w, p) * x[p];
        }

        return s;
    }
}
