using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using KvFetcher.Core;
using KvFetcher.Core.Threading;

namespace KvFetcher.Engine.Cpu;

// The GEMV computes every output exactly as the GEMM micro-kernels do, one fused multiply-add chain in k order
// starting from the bias (or zero): acc = fma(x[p], W[o, p], acc) for p = 0, 1, ... A row's result is therefore
// bit-identical whether it is computed alone (decode), in a chunk of a few rows or in a prefill of thousands, on
// any instruction set: chunked prefill and one-shot prefill produce the same KV cache.
internal static unsafe partial class MatMul
{
    /// <summary>Output rows per GEMV step: four register groups of 16 (Vector512) or 8 (Vector256) rows.</summary>
    private const int GemvStepRows = 64;

    /// <summary>
    /// Smaller GEMVs run on the calling thread alone: below about this many weight bytes waking the pool's
    /// threads (a few µs here) costs more than it saves.
    /// </summary>
    private const long GemvParallelMinBytes = 512 * 1024;

    /// <summary>A parallel GEMV task covers at least this many weight bytes.</summary>
    private const long GemvMinBytesPerTask = 64 * 1024;

    /// <summary>GEMV tasks per thread: a few, so that a thread that starts late (waking up) gets less.</summary>
    private const int GemvTasksPerThread = 4;

    [ThreadStatic]
    private static GemvWork? t_gemvWork;

    private static void RunGemv(MatMulIsa isa, float* x, int n, int k, byte* w, DType dtype, int outFeatures, float* y, float* bias, WorkerPool pool)
    {
        // Each task owns a range of output features (rows of W): whole GEMV steps, at least GemvMinBytesPerTask.
        long rowBytes = (long)k * dtype.SizeOf();
        long weightBytes = outFeatures * rowBytes;
        long byTasks = weightBytes < GemvParallelMinBytes ? 1 : weightBytes / GemvMinBytesPerTask;
        int steps = (outFeatures + GemvStepRows - 1) / GemvStepRows;
        int tasks = (int)Math.Min(Math.Min(byTasks, (long)pool.Concurrency * GemvTasksPerThread), steps);
        int rowsPerTask = (steps + tasks - 1) / tasks * GemvStepRows;
        tasks = (outFeatures + rowsPerTask - 1) / rowsPerTask;

        GemvWork work = RentWork(ref t_gemvWork);
        try
        {
            work.Set(isa, x, n, k, w, dtype, outFeatures, y, bias, rowsPerTask);
            pool.For(tasks, work);
        }
        finally
        {
            work.InUse = false;
        }
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
        private float[]? _xScratch;
        private float* _xCopies;

        public void Set(MatMulIsa isa, float* x, int n, int k, byte* w, DType dtype, int outFeatures, float* y, float* bias, int rowsPerTask)
        {
            SetCommon(isa, x, n, k, w, dtype, outFeatures, y, bias);
            _rowsPerTask = rowsPerTask;
            _xCopies = isa == MatMulIsa.Scalar ? null : CopyInput();
        }

        /// <summary>
        /// Four copies of x, one per register group. The groups read the same x values; from separate copies the
        /// JIT cannot merge their 32 broadcasts per block into registers (which would spill the accumulators), and
        /// each broadcast stays a memory operand of its FMA. 64-byte aligned, grown when needed, then reused.
        /// </summary>
        private float* CopyInput()
        {
            int length = _n * _k;
            EnsureInputCopies((4 * length) + 16);

            float* copies = AlignTo64(_xScratch);
            var source = new ReadOnlySpan<float>(_x, length);
            for (int g = 0; g < 4; g++)
            {
                source.CopyTo(new Span<float>(copies + ((nint)g * length), length));
            }

            return copies;
        }

        /// <summary>Makes the copies' smallest buffer now (inputs of up to 1020 values need no other).</summary>
        public void PrepareInputCopies() => EnsureInputCopies(0);

        [System.Diagnostics.CodeAnalysis.MemberNotNull(nameof(_xScratch))]
        private void EnsureInputCopies(int needed)
        {
            if (_xScratch is null || _xScratch.Length < needed)
            {
                _xScratch = GC.AllocateUninitializedArray<float>(Math.Max(needed, 4096), pinned: true);
            }
        }

        public override void Execute(int index)
        {
            int o0 = index * _rowsPerTask;
            int o1 = Math.Min(_outFeatures, o0 + _rowsPerTask);
            switch (_dtype)
            {
                case DType.BFloat16:
                    Range<BFloat16Load>(o0, o1);
                    break;
                case DType.Float16:
                    Range<Float16Load>(o0, o1);
                    break;
                default:
                    Range<Float32Load>(o0, o1);
                    break;
            }
        }

        private void Range<TLoad>(int o0, int o1)
            where TLoad : struct, IWeightLoad
        {
            switch (_isa)
            {
                case MatMulIsa.Vector512:
                    Range512<TLoad>(o0, o1);
                    break;
                case MatMulIsa.Vector256:
                    Range256<TLoad>(o0, o1);
                    break;
                default:
                    RangeScalar<TLoad>(o0, o1);
                    break;
            }
        }

        /// <summary>
        /// Output rows [o0, o1) in steps of 64: four groups of 16 rows, each a Vector512 of chains that the
        /// transposing <see cref="ChainBlock512{TLoad}"/> advances by one 64-byte block of k; four independent
        /// groups hide the FMA latency. k past the last whole block continues each chain in scalar code. While a
        /// step runs, the next one is prefetched in address order (measured here: 9 -> 20 GB/s from DRAM on one
        /// core, at a cost of about a fifth when W already sits in L2).
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Range512<TLoad>(int o0, int o1)
            where TLoad : struct, IWeightLoad
        {
            const int Rows = 16;
            int block = 64 / TLoad.ElementSize;
            int kBlocks = _k / block * block;
            nint rowBytes = (nint)_k * TLoad.ElementSize;
            nint* offsets = stackalloc nint[GemvStepRows];
            float* lanes = stackalloc float[GemvStepRows];
            int prefetchPerBlock = PrefetchLinesPerBlock(GemvStepRows, rowBytes, kBlocks / Math.Max(block, 1));
            byte* first = _w + (o0 * rowBytes);
            Prefetch(ref first, _w + (Math.Min(o1, o0 + GemvStepRows) * rowBytes), int.MaxValue);
            for (int o = o0; o < o1; o += GemvStepRows)
            {
                int rows = Math.Min(GemvStepRows, o1 - o);
                int groups = (rows + Rows - 1) / Rows;
                byte* wo = _w + (o * rowBytes);
                for (int l = 0; l < GemvStepRows; l++)
                {
                    // Rows past the end re-read the last row; their lanes are never stored.
                    offsets[l] = Math.Min(l, rows - 1) * rowBytes;
                }

                for (int r = 0; r < _n; r++)
                {
                    float* xr = _x + ((nint)r * _k);
                    float* x0 = _xCopies + ((nint)r * _k);
                    nint copy = (nint)_n * _k;
                    StartChains(lanes, GemvStepRows, o, rows);
                    Vector512<float> a0 = Vector512.Load(lanes);
                    Vector512<float> a1 = Vector512.Load(lanes + Rows);
                    Vector512<float> a2 = Vector512.Load(lanes + (2 * Rows));
                    Vector512<float> a3 = Vector512.Load(lanes + (3 * Rows));

                    // The next step's rows, read sequentially ahead of time: the interleaved reads of a step
                    // alone (one line of each of GemvStepRows rows per block) stream from DRAM at a third of the speed.
                    byte* ahead = r == 0 && o + GemvStepRows < o1 ? wo + (GemvStepRows * rowBytes) : null;
                    byte* aheadEnd = _w + (o1 * rowBytes);
                    for (int p = 0; p < kBlocks; p += block)
                    {
                        byte* wp = wo + ((nint)p * TLoad.ElementSize);
                        if (ahead != null)
                        {
                            Prefetch(ref ahead, aheadEnd, prefetchPerBlock);
                        }

                        a0 = ChainBlock512<TLoad>(wp, offsets, x0 + p, a0);
                        if (groups > 1)
                        {
                            a1 = ChainBlock512<TLoad>(wp, offsets + Rows, x0 + copy + p, a1);
                        }

                        if (groups > 2)
                        {
                            a2 = ChainBlock512<TLoad>(wp, offsets + (2 * Rows), x0 + (2 * copy) + p, a2);
                        }

                        if (groups > 3)
                        {
                            a3 = ChainBlock512<TLoad>(wp, offsets + (3 * Rows), x0 + (3 * copy) + p, a3);
                        }
                    }

                    a0.Store(lanes);
                    a1.Store(lanes + Rows);
                    a2.Store(lanes + (2 * Rows));
                    a3.Store(lanes + (3 * Rows));
                    FinishChains<TLoad>(lanes, xr, wo, rowBytes, kBlocks, r, o, rows);
                }
            }
        }

        /// <summary>The 256-bit twin of <see cref="Range512{TLoad}"/>: steps of 32 rows in four groups of 8.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Range256<TLoad>(int o0, int o1)
            where TLoad : struct, IWeightLoad
        {
            const int Rows = 8;
            const int StepRows = 4 * Rows;
            int block = 32 / TLoad.ElementSize;
            int kBlocks = _k / block * block;
            nint rowBytes = (nint)_k * TLoad.ElementSize;
            nint* offsets = stackalloc nint[StepRows];
            float* lanes = stackalloc float[StepRows];
            int prefetchPerBlock = PrefetchLinesPerBlock(StepRows, rowBytes, kBlocks / Math.Max(block, 1));
            byte* first = _w + (o0 * rowBytes);
            Prefetch(ref first, _w + (Math.Min(o1, o0 + StepRows) * rowBytes), int.MaxValue);
            for (int o = o0; o < o1; o += StepRows)
            {
                int rows = Math.Min(StepRows, o1 - o);
                int groups = (rows + Rows - 1) / Rows;
                byte* wo = _w + (o * rowBytes);
                for (int l = 0; l < StepRows; l++)
                {
                    offsets[l] = Math.Min(l, rows - 1) * rowBytes;
                }

                for (int r = 0; r < _n; r++)
                {
                    float* xr = _x + ((nint)r * _k);
                    float* x0 = _xCopies + ((nint)r * _k);
                    nint copy = (nint)_n * _k;
                    StartChains(lanes, StepRows, o, rows);
                    Vector256<float> a0 = Vector256.Load(lanes);
                    Vector256<float> a1 = Vector256.Load(lanes + Rows);
                    Vector256<float> a2 = Vector256.Load(lanes + (2 * Rows));
                    Vector256<float> a3 = Vector256.Load(lanes + (3 * Rows));

                    // The next step's rows, read sequentially ahead of time: the interleaved reads of a step
                    // alone (one line of each of StepRows rows per block) stream from DRAM at a third of the speed.
                    byte* ahead = r == 0 && o + StepRows < o1 ? wo + (StepRows * rowBytes) : null;
                    byte* aheadEnd = _w + (o1 * rowBytes);
                    for (int p = 0; p < kBlocks; p += block)
                    {
                        byte* wp = wo + ((nint)p * TLoad.ElementSize);
                        if (ahead != null)
                        {
                            Prefetch(ref ahead, aheadEnd, prefetchPerBlock);
                        }

                        a0 = ChainBlock256<TLoad>(wp, offsets, x0 + p, a0);
                        if (groups > 1)
                        {
                            a1 = ChainBlock256<TLoad>(wp, offsets + Rows, x0 + copy + p, a1);
                        }

                        if (groups > 2)
                        {
                            a2 = ChainBlock256<TLoad>(wp, offsets + (2 * Rows), x0 + (2 * copy) + p, a2);
                        }

                        if (groups > 3)
                        {
                            a3 = ChainBlock256<TLoad>(wp, offsets + (3 * Rows), x0 + (3 * copy) + p, a3);
                        }
                    }

                    a0.Store(lanes);
                    a1.Store(lanes + Rows);
                    a2.Store(lanes + (2 * Rows));
                    a3.Store(lanes + (3 * Rows));
                    FinishChains<TLoad>(lanes, xr, wo, rowBytes, kBlocks, r, o, rows);
                }
            }
        }

        /// <summary>Plain chains, one output at a time.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void RangeScalar<TLoad>(int o0, int o1)
            where TLoad : struct, IWeightLoad
        {
            nint rowBytes = (nint)_k * TLoad.ElementSize;
            for (int o = o0; o < o1; o++)
            {
                byte* wo = _w + (o * rowBytes);
                for (int r = 0; r < _n; r++)
                {
                    float* xr = _x + ((nint)r * _k);
                    float acc = _bias != null ? _bias[o] : 0f;
                    for (int p = 0; p < _k; p++)
                    {
                        acc = MathF.FusedMultiplyAdd(xr[p], TLoad.Scalar(wo, p), acc);
                    }

                    _y[((nint)r * _outFeatures) + o] = acc;
                }
            }
        }

        /// <summary>Cache lines to prefetch per k block so that a whole next step arrives within this step.</summary>
        private static int PrefetchLinesPerBlock(int stepRows, nint rowBytes, int blocks) =>
            blocks == 0 ? 0 : (int)(((stepRows * rowBytes / 64) + blocks - 1) / blocks);

        /// <summary>Prefetches <paramref name="lines"/> cache lines from <paramref name="next"/> on, up to the end.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Prefetch(ref byte* next, byte* end, int lines)
        {
            if (!Sse.IsSupported)
            {
                return;
            }

            for (int i = 0; i < lines && next < end; i++, next += 64)
            {
                Sse.Prefetch0(next);
            }
        }

        /// <summary>Chain start values for rows [o, o + rows) in <paramref name="count"/> lanes: the bias, or zero.</summary>
        private void StartChains(float* lanes, int count, int o, int rows)
        {
            for (int l = 0; l < count; l++)
            {
                lanes[l] = l < rows && _bias != null ? _bias[o + l] : 0f;
            }
        }

        /// <summary>Continues each row's chain over k past the last whole block, then stores the outputs.</summary>
        private void FinishChains<TLoad>(float* lanes, float* xr, byte* wo, nint rowBytes, int kBlocks, int r, int o, int rows)
            where TLoad : struct, IWeightLoad
        {
            float* yr = _y + ((nint)r * _outFeatures) + o;
            for (int l = 0; l < rows; l++)
            {
                float acc = lanes[l];
                byte* row = wo + (l * rowBytes);
                for (int p = kBlocks; p < _k; p++)
                {
                    acc = MathF.FusedMultiplyAdd(xr[p], TLoad.Scalar(row, p), acc);
                }

                yr[l] = acc;
            }
        }
    }

    /// <summary>
    /// One block of the decode chain for 16 output rows: loads 64 bytes of each row (at <c>block + offsets[l]</c>),
    /// transposes the 16x16 matrix of 32-bit lanes (each lane one fp32 or a pair of 16-bit values) so that vector c
    /// holds lane c of all 16 rows, and continues the rows' fused multiply-add chains in k order. Two banks of 16
    /// locals are reused stage by stage: the JIT inlines no method with more than 32 locals.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> ChainBlock512<TLoad>(byte* block, nint* offsets, float* x, Vector512<float> acc)
        where TLoad : struct, IWeightLoad
    {
        Vector512<uint> r0 = Vector512.Load((uint*)(block + offsets[0]));
        Vector512<uint> r1 = Vector512.Load((uint*)(block + offsets[1]));
        Vector512<uint> r2 = Vector512.Load((uint*)(block + offsets[2]));
        Vector512<uint> r3 = Vector512.Load((uint*)(block + offsets[3]));
        Vector512<uint> r4 = Vector512.Load((uint*)(block + offsets[4]));
        Vector512<uint> r5 = Vector512.Load((uint*)(block + offsets[5]));
        Vector512<uint> r6 = Vector512.Load((uint*)(block + offsets[6]));
        Vector512<uint> r7 = Vector512.Load((uint*)(block + offsets[7]));
        Vector512<uint> r8 = Vector512.Load((uint*)(block + offsets[8]));
        Vector512<uint> r9 = Vector512.Load((uint*)(block + offsets[9]));
        Vector512<uint> r10 = Vector512.Load((uint*)(block + offsets[10]));
        Vector512<uint> r11 = Vector512.Load((uint*)(block + offsets[11]));
        Vector512<uint> r12 = Vector512.Load((uint*)(block + offsets[12]));
        Vector512<uint> r13 = Vector512.Load((uint*)(block + offsets[13]));
        Vector512<uint> r14 = Vector512.Load((uint*)(block + offsets[14]));
        Vector512<uint> r15 = Vector512.Load((uint*)(block + offsets[15]));

        // 32-bit, then 64-bit interleaves within 128-bit blocks: r(4i + s) then holds lane s of rows 4i..4i+3.
        Vector512<uint> t0 = Avx512F.UnpackLow(r0, r1);
        Vector512<uint> t1 = Avx512F.UnpackHigh(r0, r1);
        Vector512<uint> t2 = Avx512F.UnpackLow(r2, r3);
        Vector512<uint> t3 = Avx512F.UnpackHigh(r2, r3);
        Vector512<uint> t4 = Avx512F.UnpackLow(r4, r5);
        Vector512<uint> t5 = Avx512F.UnpackHigh(r4, r5);
        Vector512<uint> t6 = Avx512F.UnpackLow(r6, r7);
        Vector512<uint> t7 = Avx512F.UnpackHigh(r6, r7);
        Vector512<uint> t8 = Avx512F.UnpackLow(r8, r9);
        Vector512<uint> t9 = Avx512F.UnpackHigh(r8, r9);
        Vector512<uint> t10 = Avx512F.UnpackLow(r10, r11);
        Vector512<uint> t11 = Avx512F.UnpackHigh(r10, r11);
        Vector512<uint> t12 = Avx512F.UnpackLow(r12, r13);
        Vector512<uint> t13 = Avx512F.UnpackHigh(r12, r13);
        Vector512<uint> t14 = Avx512F.UnpackLow(r14, r15);
        Vector512<uint> t15 = Avx512F.UnpackHigh(r14, r15);
        r0 = Avx512F.UnpackLow(t0.AsUInt64(), t2.AsUInt64()).AsUInt32();
        r1 = Avx512F.UnpackHigh(t0.AsUInt64(), t2.AsUInt64()).AsUInt32();
        r2 = Avx512F.UnpackLow(t1.AsUInt64(), t3.AsUInt64()).AsUInt32();
        r3 = Avx512F.UnpackHigh(t1.AsUInt64(), t3.AsUInt64()).AsUInt32();
        r4 = Avx512F.UnpackLow(t4.AsUInt64(), t6.AsUInt64()).AsUInt32();
        r5 = Avx512F.UnpackHigh(t4.AsUInt64(), t6.AsUInt64()).AsUInt32();
        r6 = Avx512F.UnpackLow(t5.AsUInt64(), t7.AsUInt64()).AsUInt32();
        r7 = Avx512F.UnpackHigh(t5.AsUInt64(), t7.AsUInt64()).AsUInt32();
        r8 = Avx512F.UnpackLow(t8.AsUInt64(), t10.AsUInt64()).AsUInt32();
        r9 = Avx512F.UnpackHigh(t8.AsUInt64(), t10.AsUInt64()).AsUInt32();
        r10 = Avx512F.UnpackLow(t9.AsUInt64(), t11.AsUInt64()).AsUInt32();
        r11 = Avx512F.UnpackHigh(t9.AsUInt64(), t11.AsUInt64()).AsUInt32();
        r12 = Avx512F.UnpackLow(t12.AsUInt64(), t14.AsUInt64()).AsUInt32();
        r13 = Avx512F.UnpackHigh(t12.AsUInt64(), t14.AsUInt64()).AsUInt32();
        r14 = Avx512F.UnpackLow(t13.AsUInt64(), t15.AsUInt64()).AsUInt32();
        r15 = Avx512F.UnpackHigh(t13.AsUInt64(), t15.AsUInt64()).AsUInt32();

        // Gather the 128-bit blocks: lane vector 4j + s = block j of r(s), r(4 + s), r(8 + s), r(12 + s).
        t0 = Avx512F.Shuffle4x128(r0, r4, 0x88);
        t1 = Avx512F.Shuffle4x128(r0, r4, 0xDD);
        t2 = Avx512F.Shuffle4x128(r8, r12, 0x88);
        t3 = Avx512F.Shuffle4x128(r8, r12, 0xDD);
        t4 = Avx512F.Shuffle4x128(r1, r5, 0x88);
        t5 = Avx512F.Shuffle4x128(r1, r5, 0xDD);
        t6 = Avx512F.Shuffle4x128(r9, r13, 0x88);
        t7 = Avx512F.Shuffle4x128(r9, r13, 0xDD);
        t8 = Avx512F.Shuffle4x128(r2, r6, 0x88);
        t9 = Avx512F.Shuffle4x128(r2, r6, 0xDD);
        t10 = Avx512F.Shuffle4x128(r10, r14, 0x88);
        t11 = Avx512F.Shuffle4x128(r10, r14, 0xDD);
        t12 = Avx512F.Shuffle4x128(r3, r7, 0x88);
        t13 = Avx512F.Shuffle4x128(r3, r7, 0xDD);
        t14 = Avx512F.Shuffle4x128(r11, r15, 0x88);
        t15 = Avx512F.Shuffle4x128(r11, r15, 0xDD);
        r0 = Avx512F.Shuffle4x128(t0, t2, 0x88);
        r4 = Avx512F.Shuffle4x128(t1, t3, 0x88);
        r8 = Avx512F.Shuffle4x128(t0, t2, 0xDD);
        r12 = Avx512F.Shuffle4x128(t1, t3, 0xDD);
        r1 = Avx512F.Shuffle4x128(t4, t6, 0x88);
        r5 = Avx512F.Shuffle4x128(t5, t7, 0x88);
        r9 = Avx512F.Shuffle4x128(t4, t6, 0xDD);
        r13 = Avx512F.Shuffle4x128(t5, t7, 0xDD);
        r2 = Avx512F.Shuffle4x128(t8, t10, 0x88);
        r6 = Avx512F.Shuffle4x128(t9, t11, 0x88);
        r10 = Avx512F.Shuffle4x128(t8, t10, 0xDD);
        r14 = Avx512F.Shuffle4x128(t9, t11, 0xDD);
        r3 = Avx512F.Shuffle4x128(t12, t14, 0x88);
        r7 = Avx512F.Shuffle4x128(t13, t15, 0x88);
        r11 = Avx512F.Shuffle4x128(t12, t14, 0xDD);
        r15 = Avx512F.Shuffle4x128(t13, t15, 0xDD);

        if (TLoad.ElementSize == 4)
        {
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[0]), r0.AsSingle(), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[1]), r1.AsSingle(), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[2]), r2.AsSingle(), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[3]), r3.AsSingle(), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[4]), r4.AsSingle(), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[5]), r5.AsSingle(), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[6]), r6.AsSingle(), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[7]), r7.AsSingle(), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[8]), r8.AsSingle(), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[9]), r9.AsSingle(), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[10]), r10.AsSingle(), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[11]), r11.AsSingle(), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[12]), r12.AsSingle(), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[13]), r13.AsSingle(), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[14]), r14.AsSingle(), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[15]), r15.AsSingle(), acc);
        }
        else
        {
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[0]), TLoad.Low512(r0), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[1]), TLoad.High512(r0), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[2]), TLoad.Low512(r1), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[3]), TLoad.High512(r1), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[4]), TLoad.Low512(r2), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[5]), TLoad.High512(r2), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[6]), TLoad.Low512(r3), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[7]), TLoad.High512(r3), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[8]), TLoad.Low512(r4), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[9]), TLoad.High512(r4), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[10]), TLoad.Low512(r5), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[11]), TLoad.High512(r5), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[12]), TLoad.Low512(r6), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[13]), TLoad.High512(r6), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[14]), TLoad.Low512(r7), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[15]), TLoad.High512(r7), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[16]), TLoad.Low512(r8), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[17]), TLoad.High512(r8), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[18]), TLoad.Low512(r9), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[19]), TLoad.High512(r9), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[20]), TLoad.Low512(r10), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[21]), TLoad.High512(r10), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[22]), TLoad.Low512(r11), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[23]), TLoad.High512(r11), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[24]), TLoad.Low512(r12), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[25]), TLoad.High512(r12), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[26]), TLoad.Low512(r13), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[27]), TLoad.High512(r13), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[28]), TLoad.Low512(r14), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[29]), TLoad.High512(r14), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[30]), TLoad.Low512(r15), acc);
            acc = Vector512.FusedMultiplyAdd(Vector512.Create(x[31]), TLoad.High512(r15), acc);
        }

        return acc;
    }

    /// <summary>The 256-bit twin of <see cref="ChainBlock512{TLoad}"/>: 8 output rows, 32 bytes of each, an 8x8 transpose.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> ChainBlock256<TLoad>(byte* block, nint* offsets, float* x, Vector256<float> acc)
        where TLoad : struct, IWeightLoad
    {
        Vector256<float> r0 = Vector256.Load((float*)(block + offsets[0]));
        Vector256<float> r1 = Vector256.Load((float*)(block + offsets[1]));
        Vector256<float> r2 = Vector256.Load((float*)(block + offsets[2]));
        Vector256<float> r3 = Vector256.Load((float*)(block + offsets[3]));
        Vector256<float> r4 = Vector256.Load((float*)(block + offsets[4]));
        Vector256<float> r5 = Vector256.Load((float*)(block + offsets[5]));
        Vector256<float> r6 = Vector256.Load((float*)(block + offsets[6]));
        Vector256<float> r7 = Vector256.Load((float*)(block + offsets[7]));

        // The same 8x8 transpose as the GEMM packing, on 32-bit lanes.
        Vector256<float> t0 = Avx.UnpackLow(r0, r1);
        Vector256<float> t1 = Avx.UnpackHigh(r0, r1);
        Vector256<float> t2 = Avx.UnpackLow(r2, r3);
        Vector256<float> t3 = Avx.UnpackHigh(r2, r3);
        Vector256<float> t4 = Avx.UnpackLow(r4, r5);
        Vector256<float> t5 = Avx.UnpackHigh(r4, r5);
        Vector256<float> t6 = Avx.UnpackLow(r6, r7);
        Vector256<float> t7 = Avx.UnpackHigh(r6, r7);
        r0 = Avx.Shuffle(t0, t2, 0x44);
        r1 = Avx.Shuffle(t0, t2, 0xEE);
        r2 = Avx.Shuffle(t1, t3, 0x44);
        r3 = Avx.Shuffle(t1, t3, 0xEE);
        r4 = Avx.Shuffle(t4, t6, 0x44);
        r5 = Avx.Shuffle(t4, t6, 0xEE);
        r6 = Avx.Shuffle(t5, t7, 0x44);
        r7 = Avx.Shuffle(t5, t7, 0xEE);
        t0 = Avx.Permute2x128(r0, r4, 0x20);
        t1 = Avx.Permute2x128(r1, r5, 0x20);
        t2 = Avx.Permute2x128(r2, r6, 0x20);
        t3 = Avx.Permute2x128(r3, r7, 0x20);
        t4 = Avx.Permute2x128(r0, r4, 0x31);
        t5 = Avx.Permute2x128(r1, r5, 0x31);
        t6 = Avx.Permute2x128(r2, r6, 0x31);
        t7 = Avx.Permute2x128(r3, r7, 0x31);

        if (TLoad.ElementSize == 4)
        {
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[0]), t0, acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[1]), t1, acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[2]), t2, acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[3]), t3, acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[4]), t4, acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[5]), t5, acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[6]), t6, acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[7]), t7, acc);
        }
        else
        {
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[0]), TLoad.Low256(t0.AsUInt32()), acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[1]), TLoad.High256(t0.AsUInt32()), acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[2]), TLoad.Low256(t1.AsUInt32()), acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[3]), TLoad.High256(t1.AsUInt32()), acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[4]), TLoad.Low256(t2.AsUInt32()), acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[5]), TLoad.High256(t2.AsUInt32()), acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[6]), TLoad.Low256(t3.AsUInt32()), acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[7]), TLoad.High256(t3.AsUInt32()), acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[8]), TLoad.Low256(t4.AsUInt32()), acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[9]), TLoad.High256(t4.AsUInt32()), acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[10]), TLoad.Low256(t5.AsUInt32()), acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[11]), TLoad.High256(t5.AsUInt32()), acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[12]), TLoad.Low256(t6.AsUInt32()), acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[13]), TLoad.High256(t6.AsUInt32()), acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[14]), TLoad.Low256(t7.AsUInt32()), acc);
            acc = Vector256.FusedMultiplyAdd(Vector256.Create(x[15]), TLoad.High256(t7.AsUInt32()), acc);
        }

        return acc;
    }

}
