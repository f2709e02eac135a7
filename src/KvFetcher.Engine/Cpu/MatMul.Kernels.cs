using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace KvFetcher.Engine.Cpu;

internal static unsafe partial class MatMul
{
    /// <summary>A compile-time row count: kernels generic over it keep only the registers and code they need.</summary>
    private interface IRowCount
    {
        static abstract int Value { get; }
    }

    /// <summary>
    /// A register-blocked GEMM micro-kernel over a packed panel of W: it computes
    /// <c>C[rows, Nr] (+)= A[rows, kc] · B[kc, Nr]</c>, where A is read in place (row stride lda), B is packed
    /// column-panel-major (<c>b[p * Nr + j]</c>) and C has row stride ldc. Without <c>accumulate</c> C starts from
    /// <c>bias[0..Nr)</c> (or zero when bias is null); with it, from C's current values.
    /// </summary>
    private interface IMicroKernel
    {
        /// <summary>Rows of A per call, at most.</summary>
        static abstract int Mr { get; }

        /// <summary>Columns of a packed panel.</summary>
        static abstract int Nr { get; }

        /// <summary>Whether packing may use the AVX 8x8 transpose.</summary>
        static abstract bool VectorPack { get; }

        static abstract void Run(int rows, int kc, float* a, nint lda, float* b, float* c, nint ldc, float* bias, bool accumulate);
    }

    private readonly struct Rows1 : IRowCount { public static int Value => 1; }

    private readonly struct Rows2 : IRowCount { public static int Value => 2; }

    private readonly struct Rows3 : IRowCount { public static int Value => 3; }

    private readonly struct Rows4 : IRowCount { public static int Value => 4; }

    private readonly struct Rows5 : IRowCount { public static int Value => 5; }

    private readonly struct Rows6 : IRowCount { public static int Value => 6; }

    private readonly struct Rows7 : IRowCount { public static int Value => 7; }

    private readonly struct Rows8 : IRowCount { public static int Value => 8; }

    private readonly struct Rows9 : IRowCount { public static int Value => 9; }

    private readonly struct Rows10 : IRowCount { public static int Value => 10; }

    private readonly struct Rows11 : IRowCount { public static int Value => 11; }

    private readonly struct Rows12 : IRowCount { public static int Value => 12; }

    /// <summary>12 rows x 32 columns (two zmm registers) with 24 accumulators: fits AVX-512's 32 registers.</summary>
    private readonly struct MicroKernel512 : IMicroKernel
    {
        public static int Mr => 12;

        public static int Nr => 32;

        public static bool VectorPack => true;

        public static void Run(int rows, int kc, float* a, nint lda, float* b, float* c, nint ldc, float* bias, bool accumulate)
        {
            switch (rows)
            {
                case 12: Kernel512<Rows12>(kc, a, lda, b, c, ldc, bias, accumulate); break;
                case 11: Kernel512<Rows11>(kc, a, lda, b, c, ldc, bias, accumulate); break;
                case 10: Kernel512<Rows10>(kc, a, lda, b, c, ldc, bias, accumulate); break;
                case 9: Kernel512<Rows9>(kc, a, lda, b, c, ldc, bias, accumulate); break;
                case 8: Kernel512<Rows8>(kc, a, lda, b, c, ldc, bias, accumulate); break;
                case 7: Kernel512<Rows7>(kc, a, lda, b, c, ldc, bias, accumulate); break;
                case 6: Kernel512<Rows6>(kc, a, lda, b, c, ldc, bias, accumulate); break;
                case 5: Kernel512<Rows5>(kc, a, lda, b, c, ldc, bias, accumulate); break;
                case 4: Kernel512<Rows4>(kc, a, lda, b, c, ldc, bias, accumulate); break;
                case 3: Kernel512<Rows3>(kc, a, lda, b, c, ldc, bias, accumulate); break;
                case 2: Kernel512<Rows2>(kc, a, lda, b, c, ldc, bias, accumulate); break;
                default: Kernel512<Rows1>(kc, a, lda, b, c, ldc, bias, accumulate); break;
            }
        }
    }

    /// <summary>6 rows x 16 columns (two ymm registers) with 12 accumulators: fits AVX2's 16 registers.</summary>
    private readonly struct MicroKernel256 : IMicroKernel
    {
        public static int Mr => 6;

        public static int Nr => 16;

        public static bool VectorPack => true;

        public static void Run(int rows, int kc, float* a, nint lda, float* b, float* c, nint ldc, float* bias, bool accumulate)
        {
            switch (rows)
            {
                case 6: Kernel256<Rows6>(kc, a, lda, b, c, ldc, bias, accumulate); break;
                case 5: Kernel256<Rows5>(kc, a, lda, b, c, ldc, bias, accumulate); break;
                case 4: Kernel256<Rows4>(kc, a, lda, b, c, ldc, bias, accumulate); break;
                case 3: Kernel256<Rows3>(kc, a, lda, b, c, ldc, bias, accumulate); break;
                case 2: Kernel256<Rows2>(kc, a, lda, b, c, ldc, bias, accumulate); break;
                default: Kernel256<Rows1>(kc, a, lda, b, c, ldc, bias, accumulate); break;
            }
        }
    }

    /// <summary>
    /// The portable fallback: plain loops over the same packed layout, with the same fused multiply-add chain per
    /// output as the vector kernels, so every instruction set gives bit-identical results.
    /// </summary>
    private readonly struct MicroKernelScalar : IMicroKernel
    {
        public static int Mr => 4;

        public static int Nr => 8;

        public static bool VectorPack => false;

        public static void Run(int rows, int kc, float* a, nint lda, float* b, float* c, nint ldc, float* bias, bool accumulate)
        {
            for (int r = 0; r < rows; r++)
            {
                float* ar = a + (r * lda);
                float* cr = c + (r * ldc);
                for (int j = 0; j < 8; j++)
                {
                    float sum = accumulate ? cr[j] : bias != null ? bias[j] : 0f;
                    for (int p = 0; p < kc; p++)
                    {
                        sum = MathF.FusedMultiplyAdd(ar[p], b[(p * 8) + j], sum);
                    }

                    cr[j] = sum;
                }
            }
        }
    }

    /// <summary>
    /// The Vector512 micro-kernel: up to 12 rows of A (broadcast, read in place with stride <paramref name="lda"/>) times a
    /// packed panel of 32 columns, accumulated in 24 registers over <paramref name="kc"/> steps.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel512<TRows>(int kc, float* a, nint lda, float* b, float* c, nint ldc, float* bias, bool accumulate)
        where TRows : struct, IRowCount
    {
        int rows = TRows.Value;
        Vector512<float> c0a = default, c0b = default;
        Vector512<float> c1a = default, c1b = default;
        Vector512<float> c2a = default, c2b = default;
        Vector512<float> c3a = default, c3b = default;
        Vector512<float> c4a = default, c4b = default;
        Vector512<float> c5a = default, c5b = default;
        Vector512<float> c6a = default, c6b = default;
        Vector512<float> c7a = default, c7b = default;
        Vector512<float> c8a = default, c8b = default;
        Vector512<float> c9a = default, c9b = default;
        Vector512<float> c10a = default, c10b = default;
        Vector512<float> c11a = default, c11b = default;
        if (accumulate)
        {
            c0a = Vector512.Load(c);
            c0b = Vector512.Load(c + 16);

            if (rows > 1)
            {
                c1a = Vector512.Load(c + (1 * ldc));
                c1b = Vector512.Load(c + (1 * ldc) + 16);
            }

            if (rows > 2)
            {
                c2a = Vector512.Load(c + (2 * ldc));
                c2b = Vector512.Load(c + (2 * ldc) + 16);
            }

            if (rows > 3)
            {
                c3a = Vector512.Load(c + (3 * ldc));
                c3b = Vector512.Load(c + (3 * ldc) + 16);
            }

            if (rows > 4)
            {
                c4a = Vector512.Load(c + (4 * ldc));
                c4b = Vector512.Load(c + (4 * ldc) + 16);
            }

            if (rows > 5)
            {
                c5a = Vector512.Load(c + (5 * ldc));
                c5b = Vector512.Load(c + (5 * ldc) + 16);
            }

            if (rows > 6)
            {
                c6a = Vector512.Load(c + (6 * ldc));
                c6b = Vector512.Load(c + (6 * ldc) + 16);
            }

            if (rows > 7)
            {
                c7a = Vector512.Load(c + (7 * ldc));
                c7b = Vector512.Load(c + (7 * ldc) + 16);
            }

            if (rows > 8)
            {
                c8a = Vector512.Load(c + (8 * ldc));
                c8b = Vector512.Load(c + (8 * ldc) + 16);
            }

            if (rows > 9)
            {
                c9a = Vector512.Load(c + (9 * ldc));
                c9b = Vector512.Load(c + (9 * ldc) + 16);
            }

            if (rows > 10)
            {
                c10a = Vector512.Load(c + (10 * ldc));
                c10b = Vector512.Load(c + (10 * ldc) + 16);
            }

            if (rows > 11)
            {
                c11a = Vector512.Load(c + (11 * ldc));
                c11b = Vector512.Load(c + (11 * ldc) + 16);
            }
        }
        else if (bias != null)
        {
            c0a = Vector512.Load(bias);
            c0b = Vector512.Load(bias + 16);
            c1a = c0a;
            c1b = c0b;
            c2a = c0a;
            c2b = c0b;
            c3a = c0a;
            c3b = c0b;
            c4a = c0a;
            c4b = c0b;
            c5a = c0a;
            c5b = c0b;
            c6a = c0a;
            c6b = c0b;
            c7a = c0a;
            c7b = c0b;
            c8a = c0a;
            c8b = c0b;
            c9a = c0a;
            c9b = c0b;
            c10a = c0a;
            c10b = c0b;
            c11a = c0a;
            c11b = c0b;
        }

        float* a0 = a;
        float* a3 = a + (3 * lda);
        float* a6 = a + (6 * lda);
        float* a9 = a + (9 * lda);
        nint lda2 = 2 * lda;
        for (int p = 0; p < kc; p++)
        {
            Vector512<float> b0 = Vector512.Load(b);
            Vector512<float> b1 = Vector512.Load(b + 16);
            Vector512<float> av;
            av = Vector512.Create(a0[0]);
            c0a = Vector512.FusedMultiplyAdd(av, b0, c0a);
            c0b = Vector512.FusedMultiplyAdd(av, b1, c0b);

            if (rows > 1)
            {
                av = Vector512.Create(a0[lda]);
                c1a = Vector512.FusedMultiplyAdd(av, b0, c1a);
                c1b = Vector512.FusedMultiplyAdd(av, b1, c1b);
            }

            if (rows > 2)
            {
                av = Vector512.Create(a0[lda2]);
                c2a = Vector512.FusedMultiplyAdd(av, b0, c2a);
                c2b = Vector512.FusedMultiplyAdd(av, b1, c2b);
            }

            if (rows > 3)
            {
                av = Vector512.Create(a3[0]);
                c3a = Vector512.FusedMultiplyAdd(av, b0, c3a);
                c3b = Vector512.FusedMultiplyAdd(av, b1, c3b);
            }

            if (rows > 4)
            {
                av = Vector512.Create(a3[lda]);
                c4a = Vector512.FusedMultiplyAdd(av, b0, c4a);
                c4b = Vector512.FusedMultiplyAdd(av, b1, c4b);
            }

            if (rows > 5)
            {
                av = Vector512.Create(a3[lda2]);
                c5a = Vector512.FusedMultiplyAdd(av, b0, c5a);
                c5b = Vector512.FusedMultiplyAdd(av, b1, c5b);
            }

            if (rows > 6)
            {
                av = Vector512.Create(a6[0]);
                c6a = Vector512.FusedMultiplyAdd(av, b0, c6a);
                c6b = Vector512.FusedMultiplyAdd(av, b1, c6b);
            }

            if (rows > 7)
            {
                av = Vector512.Create(a6[lda]);
                c7a = Vector512.FusedMultiplyAdd(av, b0, c7a);
                c7b = Vector512.FusedMultiplyAdd(av, b1, c7b);
            }

            if (rows > 8)
            {
                av = Vector512.Create(a6[lda2]);
                c8a = Vector512.FusedMultiplyAdd(av, b0, c8a);
                c8b = Vector512.FusedMultiplyAdd(av, b1, c8b);
            }

            if (rows > 9)
            {
                av = Vector512.Create(a9[0]);
                c9a = Vector512.FusedMultiplyAdd(av, b0, c9a);
                c9b = Vector512.FusedMultiplyAdd(av, b1, c9b);
            }

            if (rows > 10)
            {
                av = Vector512.Create(a9[lda]);
                c10a = Vector512.FusedMultiplyAdd(av, b0, c10a);
                c10b = Vector512.FusedMultiplyAdd(av, b1, c10b);
            }

            if (rows > 11)
            {
                av = Vector512.Create(a9[lda2]);
                c11a = Vector512.FusedMultiplyAdd(av, b0, c11a);
                c11b = Vector512.FusedMultiplyAdd(av, b1, c11b);
            }

            b += 32;
            a0++;
            a3++;
            a6++;
            a9++;
        }

        c0a.Store(c);
        c0b.Store(c + 16);

        if (rows > 1)
        {
            c1a.Store(c + (1 * ldc));
            c1b.Store(c + (1 * ldc) + 16);
        }

        if (rows > 2)
        {
            c2a.Store(c + (2 * ldc));
            c2b.Store(c + (2 * ldc) + 16);
        }

        if (rows > 3)
        {
            c3a.Store(c + (3 * ldc));
            c3b.Store(c + (3 * ldc) + 16);
        }

        if (rows > 4)
        {
            c4a.Store(c + (4 * ldc));
            c4b.Store(c + (4 * ldc) + 16);
        }

        if (rows > 5)
        {
            c5a.Store(c + (5 * ldc));
            c5b.Store(c + (5 * ldc) + 16);
        }

        if (rows > 6)
        {
            c6a.Store(c + (6 * ldc));
            c6b.Store(c + (6 * ldc) + 16);
        }

        if (rows > 7)
        {
            c7a.Store(c + (7 * ldc));
            c7b.Store(c + (7 * ldc) + 16);
        }

        if (rows > 8)
        {
            c8a.Store(c + (8 * ldc));
            c8b.Store(c + (8 * ldc) + 16);
        }

        if (rows > 9)
        {
            c9a.Store(c + (9 * ldc));
            c9b.Store(c + (9 * ldc) + 16);
        }

        if (rows > 10)
        {
            c10a.Store(c + (10 * ldc));
            c10b.Store(c + (10 * ldc) + 16);
        }

        if (rows > 11)
        {
            c11a.Store(c + (11 * ldc));
            c11b.Store(c + (11 * ldc) + 16);
        }
    }

    /// <summary>
    /// The Vector256 micro-kernel: up to 6 rows of A (broadcast, read in place with stride <paramref name="lda"/>) times a
    /// packed panel of 16 columns, accumulated in 12 registers over <paramref name="kc"/> steps.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel256<TRows>(int kc, float* a, nint lda, float* b, float* c, nint ldc, float* bias, bool accumulate)
        where TRows : struct, IRowCount
    {
        int rows = TRows.Value;
        Vector256<float> c0a = default, c0b = default;
        Vector256<float> c1a = default, c1b = default;
        Vector256<float> c2a = default, c2b = default;
        Vector256<float> c3a = default, c3b = default;
        Vector256<float> c4a = default, c4b = default;
        Vector256<float> c5a = default, c5b = default;
        if (accumulate)
        {
            c0a = Vector256.Load(c);
            c0b = Vector256.Load(c + 8);

            if (rows > 1)
            {
                c1a = Vector256.Load(c + (1 * ldc));
                c1b = Vector256.Load(c + (1 * ldc) + 8);
            }

            if (rows > 2)
            {
                c2a = Vector256.Load(c + (2 * ldc));
                c2b = Vector256.Load(c + (2 * ldc) + 8);
            }

            if (rows > 3)
            {
                c3a = Vector256.Load(c + (3 * ldc));
                c3b = Vector256.Load(c + (3 * ldc) + 8);
            }

            if (rows > 4)
            {
                c4a = Vector256.Load(c + (4 * ldc));
                c4b = Vector256.Load(c + (4 * ldc) + 8);
            }

            if (rows > 5)
            {
                c5a = Vector256.Load(c + (5 * ldc));
                c5b = Vector256.Load(c + (5 * ldc) + 8);
            }
        }
        else if (bias != null)
        {
            c0a = Vector256.Load(bias);
            c0b = Vector256.Load(bias + 8);
            c1a = c0a;
            c1b = c0b;
            c2a = c0a;
            c2b = c0b;
            c3a = c0a;
            c3b = c0b;
            c4a = c0a;
            c4b = c0b;
            c5a = c0a;
            c5b = c0b;
        }

        float* a0 = a;
        float* a3 = a + (3 * lda);
        nint lda2 = 2 * lda;
        for (int p = 0; p < kc; p++)
        {
            Vector256<float> b0 = Vector256.Load(b);
            Vector256<float> b1 = Vector256.Load(b + 8);
            Vector256<float> av;
            av = Vector256.Create(a0[0]);
            c0a = Vector256.FusedMultiplyAdd(av, b0, c0a);
            c0b = Vector256.FusedMultiplyAdd(av, b1, c0b);

            if (rows > 1)
            {
                av = Vector256.Create(a0[lda]);
                c1a = Vector256.FusedMultiplyAdd(av, b0, c1a);
                c1b = Vector256.FusedMultiplyAdd(av, b1, c1b);
            }

            if (rows > 2)
            {
                av = Vector256.Create(a0[lda2]);
                c2a = Vector256.FusedMultiplyAdd(av, b0, c2a);
                c2b = Vector256.FusedMultiplyAdd(av, b1, c2b);
            }

            if (rows > 3)
            {
                av = Vector256.Create(a3[0]);
                c3a = Vector256.FusedMultiplyAdd(av, b0, c3a);
                c3b = Vector256.FusedMultiplyAdd(av, b1, c3b);
            }

            if (rows > 4)
            {
                av = Vector256.Create(a3[lda]);
                c4a = Vector256.FusedMultiplyAdd(av, b0, c4a);
                c4b = Vector256.FusedMultiplyAdd(av, b1, c4b);
            }

            if (rows > 5)
            {
                av = Vector256.Create(a3[lda2]);
                c5a = Vector256.FusedMultiplyAdd(av, b0, c5a);
                c5b = Vector256.FusedMultiplyAdd(av, b1, c5b);
            }

            b += 16;
            a0++;
            a3++;
        }

        c0a.Store(c);
        c0b.Store(c + 8);

        if (rows > 1)
        {
            c1a.Store(c + (1 * ldc));
            c1b.Store(c + (1 * ldc) + 8);
        }

        if (rows > 2)
        {
            c2a.Store(c + (2 * ldc));
            c2b.Store(c + (2 * ldc) + 8);
        }

        if (rows > 3)
        {
            c3a.Store(c + (3 * ldc));
            c3b.Store(c + (3 * ldc) + 8);
        }

        if (rows > 4)
        {
            c4a.Store(c + (4 * ldc));
            c4b.Store(c + (4 * ldc) + 8);
        }

        if (rows > 5)
        {
            c5a.Store(c + (5 * ldc));
            c5b.Store(c + (5 * ldc) + 8);
        }
    }
}
