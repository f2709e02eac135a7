using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvFetcher.Engine.Cpu;

internal static unsafe partial class MatMul
{
    /// <summary>
    /// Packs <c>W[j0 .. j0+cols, p0 .. p0+kc)</c> as fp32 panels of <paramref name="nr"/> output features: panel q
    /// holds <c>dst[q*kc*nr + p*nr + j] = W[j0 + q*nr + j, p0 + p]</c>, zero past the last feature. This is the
    /// transpose the micro-kernel wants (one vector load per k step), and the only place W is widened for GEMM.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackPanels<TLoad>(byte* w, int k, int outFeatures, int j0, int cols, int p0, int kc, int nr, float* dst, bool vector)
        where TLoad : struct, IWeightLoad
    {
        nint rowBytes = (nint)k * TLoad.ElementSize;
        int jEnd = Math.Min(outFeatures, j0 + cols);
        bool transpose8 = vector && Avx.IsSupported;
        int panels = (cols + nr - 1) / nr;
        for (int q = 0; q < panels; q++)
        {
            float* panel = dst + ((nint)q * kc * nr);
            for (int g = 0; g < nr; g += 8)
            {
                int jb = j0 + (q * nr) + g;
                int valid = Math.Clamp(jEnd - jb, 0, 8);
                byte* r0 = w + (jb * rowBytes) + ((nint)p0 * TLoad.ElementSize);
                int p = 0;
                if (transpose8 && valid == 8)
                {
                    for (; p + 8 <= kc; p += 8)
                    {
                        Transpose8x8Store<TLoad>(r0, rowBytes, p, panel + ((nint)p * nr) + g, nr);
                    }
                }

                for (; p < kc; p++)
                {
                    float* d = panel + ((nint)p * nr) + g;
                    for (int t = 0; t < 8; t++)
                    {
                        d[t] = t < valid ? TLoad.Scalar(r0 + (t * rowBytes), p) : 0f;
                    }
                }
            }
        }
    }

    /// <summary>
    /// Loads an 8x8 block (8 rows of W from <paramref name="r0"/>, k elements [p, p+8)), widens it, transposes it in
    /// registers and stores row t of the result (k index p+t, 8 output features) at <c>dst + t*stride</c>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8x8Store<TLoad>(byte* r0, nint rowBytes, nint p, float* dst, int stride)
        where TLoad : struct, IWeightLoad
    {
        Vector256<float> v0 = TLoad.Load8(r0, p);
        Vector256<float> v1 = TLoad.Load8(r0 + rowBytes, p);
        Vector256<float> v2 = TLoad.Load8(r0 + (2 * rowBytes), p);
        Vector256<float> v3 = TLoad.Load8(r0 + (3 * rowBytes), p);
        Vector256<float> v4 = TLoad.Load8(r0 + (4 * rowBytes), p);
        Vector256<float> v5 = TLoad.Load8(r0 + (5 * rowBytes), p);
        Vector256<float> v6 = TLoad.Load8(r0 + (6 * rowBytes), p);
        Vector256<float> v7 = TLoad.Load8(r0 + (7 * rowBytes), p);

        // Interleave pairs of rows, then pairs of pairs: u0 holds k-columns 0 and 4 of rows 0-3, and so on.
        Vector256<float> t0 = Avx.UnpackLow(v0, v1);
        Vector256<float> t1 = Avx.UnpackHigh(v0, v1);
        Vector256<float> t2 = Avx.UnpackLow(v2, v3);
        Vector256<float> t3 = Avx.UnpackHigh(v2, v3);
        Vector256<float> t4 = Avx.UnpackLow(v4, v5);
        Vector256<float> t5 = Avx.UnpackHigh(v4, v5);
        Vector256<float> t6 = Avx.UnpackLow(v6, v7);
        Vector256<float> t7 = Avx.UnpackHigh(v6, v7);
        Vector256<float> u0 = Avx.Shuffle(t0, t2, 0x44);
        Vector256<float> u1 = Avx.Shuffle(t0, t2, 0xEE);
        Vector256<float> u2 = Avx.Shuffle(t1, t3, 0x44);
        Vector256<float> u3 = Avx.Shuffle(t1, t3, 0xEE);
        Vector256<float> u4 = Avx.Shuffle(t4, t6, 0x44);
        Vector256<float> u5 = Avx.Shuffle(t4, t6, 0xEE);
        Vector256<float> u6 = Avx.Shuffle(t5, t7, 0x44);
        Vector256<float> u7 = Avx.Shuffle(t5, t7, 0xEE);

        // Join the 128-bit halves: rows 0-3 from u(i), rows 4-7 from u(i+4).
        Avx.Permute2x128(u0, u4, 0x20).Store(dst);
        Avx.Permute2x128(u1, u5, 0x20).Store(dst + stride);
        Avx.Permute2x128(u2, u6, 0x20).Store(dst + (2 * stride));
        Avx.Permute2x128(u3, u7, 0x20).Store(dst + (3 * stride));
        Avx.Permute2x128(u0, u4, 0x31).Store(dst + (4 * stride));
        Avx.Permute2x128(u1, u5, 0x31).Store(dst + (5 * stride));
        Avx.Permute2x128(u2, u6, 0x31).Store(dst + (6 * stride));
        Avx.Permute2x128(u3, u7, 0x31).Store(dst + (7 * stride));
    }
}
