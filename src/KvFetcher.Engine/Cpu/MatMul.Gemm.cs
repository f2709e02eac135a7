using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using KvFetcher.Core;
using KvFetcher.Core.Threading;

namespace KvFetcher.Engine.Cpu;

internal static unsafe partial class MatMul
{
    /// <summary>
    /// Most k steps packed at once. One pass covers the model's k = 384 whole (so C is written once and X read
    /// once); a kc x Nr panel of up to 64 KiB streams from L2, which the micro-kernel sustains at full rate.
    /// </summary>
    internal const int KcMax = 512;

    /// <summary>Floats of one packed block of W (512 KiB): kc x NC, with NC as wide as fits, stays in L2.</summary>
    internal const int PackFloats = 128 * 1024;

    /// <summary>A column split stops at this many output features per task; below it rows are split instead.</summary>
    private const int NcMinSplit = 128;

    /// <summary>Products smaller than this (in multiply-adds) run on the calling thread alone.</summary>
    private const long GemmMinParallelMacs = 1L << 19;

    /// <summary>Floats of each thread's scratch: the packed block plus one edge tile, with room to align.</summary>
    private const int ScratchFloats = PackFloats + (12 * 32) + 16;

    [ThreadStatic]
    private static GemmWork? t_gemmWork;

    [ThreadStatic]
    private static float[]? t_scratch;

    private static void RunGemm(MatMulIsa isa, float* x, int n, int k, byte* w, DType dtype, int outFeatures, float* y, float* bias, WorkerPool pool)
    {
        (int mr, int nr) = isa switch
        {
            MatMulIsa.Vector512 => (MicroKernel512.Mr, MicroKernel512.Nr),
            MatMulIsa.Vector256 => (MicroKernel256.Mr, MicroKernel256.Nr),
            _ => (MicroKernelScalar.Mr, MicroKernelScalar.Nr),
        };

        int panels = (outFeatures + nr - 1) / nr;
        int stripes = (n + mr - 1) / mr;
        int threads = (long)n * outFeatures * k < GemmMinParallelMacs ? 1 : pool.Concurrency;

        // Equal k chunks (a multiple of 8 for the transposing pack), none longer than KcMax.
        int kChunks = (k + KcMax - 1) / KcMax;
        int kcStep = (((k + kChunks - 1) / kChunks) + 7) & ~7;
        int panelsMax = PackFloats / kcStep / nr;

        // Prefer splitting output features (each W element is then packed once); split rows only when the
        // column blocks would get too narrow to keep every thread busy.
        int tilesN = (panels + panelsMax - 1) / panelsMax;
        if (tilesN < threads)
        {
            tilesN = Math.Max(tilesN, Math.Min(threads, panels * nr / NcMinSplit));
        }

        int tilesM = Math.Min(stripes, (threads + tilesN - 1) / tilesN);
        int panelsPerTile = (panels + tilesN - 1) / tilesN;
        tilesN = (panels + panelsPerTile - 1) / panelsPerTile;
        int stripesPerTile = (stripes + tilesM - 1) / tilesM;
        tilesM = (stripes + stripesPerTile - 1) / stripesPerTile;

        // The caller's scratch is made now, whichever tiles it ends up running: a second call never allocates.
        _ = ThreadScratch();
        GemmWork work = RentWork(ref t_gemmWork);
        try
        {
            work.Set(isa, x, n, k, w, dtype, outFeatures, y, bias);
            work.SetTiling(tilesN, panelsPerTile * nr, stripesPerTile * mr, kcStep);
            pool.For(tilesN * tilesM, work);
        }
        finally
        {
            work.InUse = false;
        }
    }

    /// <summary>This thread's packing scratch, 64-byte aligned; made on the thread's first product and kept.</summary>
    /// <summary>
    /// Makes every thread of <paramref name="pool"/> its scratch and cached work objects now (products run inside
    /// parallel work, e.g. attention's, run on the worker that calls them), so that no product allocates later.
    /// </summary>
    public static void PrepareThreads(WorkerPool pool) => pool.OnEachThread(s_scratchPreparation);

    private static readonly ScratchPreparation s_scratchPreparation = new();

    private sealed class ScratchPreparation : IParallelWork
    {
        public void Execute(int index)
        {
            _ = ThreadScratch();
            t_gemmWork ??= new GemmWork();
            (t_gemvWork ??= new GemvWork()).PrepareInputCopies();
        }
    }

    private static float* ThreadScratch() =>
        AlignTo64(t_scratch ??= GC.AllocateUninitializedArray<float>(ScratchFloats, pinned: true));

    /// <summary>The first 64-byte aligned element of a pinned array that has 16 floats to spare for it.</summary>
    private static float* AlignTo64(float[] pinned)
    {
        nint address = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinned));
        return (float*)((address + 63) & ~(nint)63);
    }

    private sealed class GemmWork : MatMulWork
    {
        private int _tilesN;
        private int _colsPerTile;
        private int _rowsPerTile;
        private int _kcStep;

        public void Set(MatMulIsa isa, float* x, int n, int k, byte* w, DType dtype, int outFeatures, float* y, float* bias) =>
            SetCommon(isa, x, n, k, w, dtype, outFeatures, y, bias);

        public void SetTiling(int tilesN, int colsPerTile, int rowsPerTile, int kcStep)
        {
            _tilesN = tilesN;
            _colsPerTile = colsPerTile;
            _rowsPerTile = rowsPerTile;
            _kcStep = kcStep;
        }

        public override void Execute(int index)
        {
            int j0 = index % _tilesN * _colsPerTile;
            int i0 = index / _tilesN * _rowsPerTile;
            int j1 = Math.Min(_outFeatures, j0 + _colsPerTile);
            int i1 = Math.Min(_n, i0 + _rowsPerTile);
            switch (_isa)
            {
                case MatMulIsa.Vector512:
                    Tile<MicroKernel512>(i0, i1, j0, j1);
                    break;
                case MatMulIsa.Vector256:
                    Tile<MicroKernel256>(i0, i1, j0, j1);
                    break;
                default:
                    Tile<MicroKernelScalar>(i0, i1, j0, j1);
                    break;
            }
        }

        private void Tile<TKernel>(int i0, int i1, int j0, int j1)
            where TKernel : struct, IMicroKernel
        {
            switch (_dtype)
            {
                case DType.BFloat16:
                    Tile<TKernel, BFloat16Load>(i0, i1, j0, j1);
                    break;
                case DType.Float16:
                    Tile<TKernel, Float16Load>(i0, i1, j0, j1);
                    break;
                default:
                    Tile<TKernel, Float32Load>(i0, i1, j0, j1);
                    break;
            }
        }

        /// <summary>
        /// Output rows [i0, i1) x features [j0, j1): per k chunk, pack that block of W once, then sweep strips of
        /// Mr rows of X (which stay in L1) across all packed panels (which stay in L2).
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Tile<TKernel, TLoad>(int i0, int i1, int j0, int j1)
            where TKernel : struct, IMicroKernel
            where TLoad : struct, IWeightLoad
        {
            int mr = TKernel.Mr;
            int nr = TKernel.Nr;
            int cols = j1 - j0;
            int panels = (cols + nr - 1) / nr;
            nint lda = _k;
            nint ldc = _outFeatures;
            float* packed = ThreadScratch();
            float* edge = packed + PackFloats;
            for (int p0 = 0; p0 < _k; p0 += _kcStep)
            {
                int kc = Math.Min(_kcStep, _k - p0);
                bool accumulate = p0 > 0;
                PackPanels<TLoad>(_w, _k, _outFeatures, j0, cols, p0, kc, nr, packed, TKernel.VectorPack);
                for (int i = i0; i < i1; i += mr)
                {
                    int rows = Math.Min(mr, i1 - i);
                    float* a = _x + (i * lda) + p0;
                    float* cRow = _y + (i * ldc);
                    for (int q = 0; q < panels; q++)
                    {
                        int j = j0 + (q * nr);
                        float* b = packed + ((nint)q * kc * nr);
                        int width = Math.Min(nr, j1 - j);
                        float* bias = accumulate || _bias == null ? null : _bias + j;
                        if (width == nr)
                        {
                            TKernel.Run(rows, kc, a, lda, b, cRow + j, ldc, bias, accumulate);
                        }
                        else
                        {
                            EdgePanel<TKernel>(rows, width, kc, a, lda, b, cRow + j, ldc, bias, accumulate, edge);
                        }
                    }
                }
            }
        }

        /// <summary>The last, narrower panel: run the kernel on a full-width scratch tile and copy the valid part.</summary>
        private static void EdgePanel<TKernel>(int rows, int width, int kc, float* a, nint lda, float* b, float* c, nint ldc, float* bias, bool accumulate, float* edge)
            where TKernel : struct, IMicroKernel
        {
            int nr = TKernel.Nr;
            for (int r = 0; r < rows; r++)
            {
                for (int t = 0; t < nr; t++)
                {
                    edge[(r * nr) + t] = t >= width ? 0f : accumulate ? c[(r * ldc) + t] : bias != null ? bias[t] : 0f;
                }
            }

            TKernel.Run(rows, kc, a, lda, b, edge, nr, null, accumulate: true);
            for (int r = 0; r < rows; r++)
            {
                new ReadOnlySpan<float>(edge + (r * nr), width).CopyTo(new Span<float>(c + (r * ldc), width));
            }
        }
    }
}
