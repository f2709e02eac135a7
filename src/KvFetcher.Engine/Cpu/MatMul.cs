using System.Runtime.Intrinsics;
using KvFetcher.Core;
using KvFetcher.Core.Threading;
using KvFetcher.Engine.Model;

namespace KvFetcher.Engine.Cpu;

/// <summary>The instruction set a <see cref="MatMul"/> call runs its kernels on.</summary>
internal enum MatMulIsa
{
    /// <summary>Plain scalar loops: the fallback, and the reference the vector paths are tested against.</summary>
    Scalar = 0,

    /// <summary>256-bit vectors with FMA (AVX2 on x64).</summary>
    Vector256 = 1,

    /// <summary>512-bit vectors with FMA (AVX-512 on x64).</summary>
    Vector512 = 2,
}

/// <summary>
/// Matrix products of the CPU engine: <c>Y[n, out] = X[n, in] · Wᵀ (+ bias)</c> with W in the HF Linear layout
/// <c>[out, in]</c>, stored as bf16, fp16 or fp32 and read in place. Arithmetic is fp32 with fused multiply-adds.
/// <para>
/// Every output is one FMA chain in k order starting from its bias (or zero): <c>acc = fma(x[p], W[o, p], acc)</c>.
/// All paths below compute exactly that, so a row's result is bit-identical whatever n, chunking, thread split or
/// instruction set it was computed with (chunked prefill equals one-shot prefill, decode equals prefill).
/// </para>
/// <para>
/// A few rows (decode) run as a GEMV that streams W once, transposing 16 rows at a time in registers so that each
/// vector lane carries one output's chain. More rows (prefill) run as a cache-blocked GEMM: each task widens and
/// transposes a block of W into pooled fp32 scratch (a "packed panel") and runs a 12x32 (AVX-512) or 6x16 (AVX2)
/// register-blocked micro-kernel over it. Work is split over the <see cref="WorkerPool"/> by blocks of output
/// features and, where those are too few, by blocks of rows.
/// </para>
/// <para>A call allocates nothing once each thread involved has made its scratch (on its first call).</para>
/// </summary>
internal static unsafe partial class MatMul
{
    /// <summary>Below this many rows a product runs as GEMV; from it on as packed GEMM.</summary>
    internal const int GemvMaxRows = 4;

    private static volatile MatMulIsa s_isa = BestIsa;

    /// <summary>The widest instruction set this machine runs vectorized.</summary>
    internal static MatMulIsa BestIsa =>
        Vector512.IsHardwareAccelerated ? MatMulIsa.Vector512
        : Vector256.IsHardwareAccelerated ? MatMulIsa.Vector256
        : MatMulIsa.Scalar;

    /// <summary>
    /// The instruction set later calls use (the best one unless changed). Tests and benchmarks lower it to run the
    /// narrower paths; each call reads it once, so a change never mixes paths within one product.
    /// </summary>
    internal static MatMulIsa Isa
    {
        get => s_isa;
        set
        {
            if (value < MatMulIsa.Scalar || value > BestIsa)
            {
                throw new NotSupportedException($"Instruction set {value} is not accelerated on this machine (best: {BestIsa}).");
            }

            s_isa = value;
        }
    }

    /// <summary>
    /// Computes <c>y[n, w.Rows] = x[n, w.Columns] · wᵀ (+ bias)</c>, all row-major and contiguous.
    /// </summary>
    /// <param name="x">The inputs, at least <c>n * w.Columns</c> values.</param>
    /// <param name="n">Rows of <paramref name="x"/> (tokens), at least 1.</param>
    /// <param name="w">A 2-D weight [out, in] of any supported dtype; read in place.</param>
    /// <param name="y">Receives at least <c>n * w.Rows</c> values (overwritten, not accumulated).</param>
    /// <param name="pool">The threads to run on.</param>
    /// <param name="bias">Empty, or <c>w.Rows</c> values added to every output row.</param>
    public static void Multiply(ReadOnlySpan<float> x, int n, WeightTensor w, Span<float> y, WorkerPool pool, ReadOnlySpan<float> bias = default)
    {
        ArgumentNullException.ThrowIfNull(w);
        if (w.Shape.Length != 2)
        {
            throw new ArgumentException($"Weight '{w.Name}' must be 2-D; its shape is [{string.Join(", ", w.Shape)}].", nameof(w));
        }

        int k = w.Columns;
        int outFeatures = w.Rows;
        Validate(x, n, k, outFeatures, y, bias, pool);
        fixed (float* px = x)
        fixed (float* py = y)
        fixed (float* pb = bias)
        {
            Run(px, n, k, w.Data, w.DType, outFeatures, py, bias.IsEmpty ? null : pb, pool);
        }

        // The mapping behind w.Data lives as long as w's owner; keep it reachable until the product is done.
        GC.KeepAlive(w);
    }

    /// <summary>
    /// Computes <c>y[n, outFeatures] = x[n, k] · wᵀ</c> for fp32 weights <paramref name="wRowMajor"/> [outFeatures, k].
    /// </summary>
    public static void Multiply(ReadOnlySpan<float> x, int n, int k, ReadOnlySpan<float> wRowMajor, int outFeatures, Span<float> y, WorkerPool pool)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(outFeatures, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(wRowMajor.Length, (long)outFeatures * k, nameof(wRowMajor));
        Validate(x, n, k, outFeatures, y, default, pool);
        fixed (float* px = x)
        fixed (float* pw = wRowMajor)
        fixed (float* py = y)
        {
            Run(px, n, k, (byte*)pw, DType.Float32, outFeatures, py, null, pool);
        }
    }

    private static void Validate(ReadOnlySpan<float> x, int n, int k, int outFeatures, Span<float> y, ReadOnlySpan<float> bias, WorkerPool pool)
    {
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(outFeatures, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(x.Length, (long)n * k, nameof(x));
        ArgumentOutOfRangeException.ThrowIfLessThan(y.Length, (long)n * outFeatures, nameof(y));
        if (!bias.IsEmpty)
        {
            ArgumentOutOfRangeException.ThrowIfNotEqual(bias.Length, outFeatures, nameof(bias));
        }
    }

    private static void Run(float* x, int n, int k, byte* w, DType dtype, int outFeatures, float* y, float* bias, WorkerPool pool)
    {
        MatMulIsa isa = s_isa;
        if (n < GemvMaxRows)
        {
            RunGemv(isa, x, n, k, w, dtype, outFeatures, y, bias, pool);
        }
        else
        {
            RunGemm(isa, x, n, k, w, dtype, outFeatures, y, bias, pool);
        }
    }
}
