using System.Runtime.InteropServices;
using KvFetcher.Core;
using KvFetcher.Core.Numerics;
using KvFetcher.Core.Threading;
using KvFetcher.Engine.Cpu;
using KvFetcher.Engine.Model;

namespace KvFetcher.Engine.Tests.Cpu;

/// <summary>
/// Checks every path of <see cref="MatMul"/> (each instruction set, dtype, GEMV and GEMM, edge sizes, bias) against
/// a double-precision reference. <see cref="MatMul.Isa"/> is process-wide, so these tests run in the serial
/// <see cref="KernelSwitchGroup"/>: no other test's model runs while they flip it.
/// </summary>
[Collection(nameof(KernelSwitchGroup))]
public sealed unsafe class MatMulTests : IDisposable
{
    /// <summary>All work on the calling thread, so that its allocation counter sees everything MatMul does.</summary>
    /// <remarks>Never disposed: it has no threads.</remarks>
    private static readonly WorkerPool s_callerOnly = new(1);

    private readonly WorkerPool _pool = new(3);

    /// <summary>Every instruction set (by name: the enum is internal) x dtype x a flag.</summary>
    public static TheoryData<string, DType, bool> Paths()
    {
        var data = new TheoryData<string, DType, bool>();
        foreach (string isa in Enum.GetNames<MatMulIsa>())
        {
            foreach (DType dtype in Enum.GetValues<DType>())
            {
                data.Add(isa, dtype, false);
                data.Add(isa, dtype, true);
            }
        }

        return data;
    }

    // (n, k, out): sizes around the vector widths and bf16 pair blocks (16, 32, 64), the micro-tiles (12 x 32,
    // 6 x 16, 4 x 8), the k chunk (512; 1001 splits into two not a multiple of 8), column and row splits across
    // threads, and n below the GEMV threshold, once with enough weight bytes (>= 512 KiB) for a parallel GEMV.
    private static readonly (int N, int K, int Out)[] s_shapes =
    [
        (1, 1, 1), (1, 17, 3), (1, 255, 65), (2, 63, 17), (3, 65, 63), (1, 520, 600), (4, 3, 255), (5, 384, 33),
        (13, 1001, 70), (17, 64, 129), (63, 17, 65), (65, 300, 40), (40, 96, 1100),
    ];

    public void Dispose()
    {
        MatMul.Isa = MatMul.BestIsa;
        _pool.Dispose();
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void Multiply_OddShapes_MatchesDoubleReference(string isaName, DType dtype, bool withBias)
    {
        MatMulIsa isa = UseIsa(isaName);
        var random = new Random(1234 + ((int)isa * 10) + (int)dtype);
        foreach ((int n, int k, int outFeatures) in s_shapes)
        {
            float[] x = RandomValues(random, n * k);
            float[] bias = withBias ? RandomValues(random, outFeatures) : [];
            using var w = new TestWeight(dtype, outFeatures, k, random);
            float[] y = new float[n * outFeatures];
            y.AsSpan().Fill(float.NaN);

            MatMul.Multiply(x, n, w.Tensor, y, _pool, bias);

            AssertMatchesReference(x, n, k, w.Values, outFeatures, bias, y, $"{isa} {dtype} n={n} k={k} out={outFeatures}");
        }
    }

    [Theory]
    [InlineData(nameof(MatMulIsa.Scalar))]
    [InlineData(nameof(MatMulIsa.Vector256))]
    [InlineData(nameof(MatMulIsa.Vector512))]
    public void Multiply_Float32Span_MatchesDoubleReference(string isaName)
    {
        MatMulIsa isa = UseIsa(isaName);
        var random = new Random(99);
        foreach ((int n, int k, int outFeatures) in s_shapes)
        {
            float[] x = RandomValues(random, n * k);
            float[] w = RandomValues(random, outFeatures * k);
            float[] y = new float[n * outFeatures];

            MatMul.Multiply(x, n, k, w, outFeatures, y, _pool);

            AssertMatchesReference(x, n, k, w, outFeatures, [], y, $"{isa} fp32 span n={n} k={k} out={outFeatures}");
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void Multiply_OneHotInputs_ReturnStoredWeightsExactly(string isaName, DType dtype, bool gemm)
    {
        MatMulIsa isa = UseIsa(isaName);
        const int K = 40;
        const int Out = 37;
        var random = new Random(7);
        int n = gemm ? 9 : 1;

        // Finite extremes, zeros and subnormals spread over W; row i of x selects column 3i + 1.
        float[] finite = Array.FindAll(SpecialValues(dtype), float.IsFinite);
        float[] values = RandomValues(random, Out * K);
        for (int e = 0; e < values.Length; e += 3)
        {
            values[e] = finite[e % finite.Length];
        }

        int[] columns = new int[n];
        for (int i = 0; i < n; i++)
        {
            columns[i] = ((3 * i) + 1) % K;
        }

        AssertOneHotProduct(isa, dtype, n, K, Out, values, columns);

        // Inf and NaN in column 1, which every row selects (any other column would multiply them by zero).
        float[] nonFinite = [float.PositiveInfinity, float.NegativeInfinity, float.NaN, 2.5f];
        values = RandomValues(random, Out * K);
        for (int o = 0; o < Out; o++)
        {
            values[(o * K) + 1] = nonFinite[o % nonFinite.Length];
        }

        AssertOneHotProduct(isa, dtype, n, K, Out, values, Enumerable.Repeat(1, n).ToArray());
    }

    [Theory]
    [InlineData(DType.BFloat16, 384, 70)]
    [InlineData(DType.Float16, 1001, 129)]
    [InlineData(DType.Float32, 65, 33)]
    public void Multiply_AnyChunkingOrIsa_RowsBitIdentical(DType dtype, int k, int outFeatures)
    {
        // Every output is one FMA chain in k order from the bias, whatever the path (GEMV or GEMM), the row's
        // place in a tile, the thread split or the instruction set: chunked prefill must equal one-shot prefill.
        const int N = 41;
        var random = new Random(11);
        float[] x = RandomValues(random, N * k);
        float[] bias = RandomValues(random, outFeatures);
        using var w = new TestWeight(dtype, outFeatures, k, random);
        float[] whole = new float[N * outFeatures];
        MatMul.Multiply(x, N, w.Tensor, whole, _pool, bias);

        foreach (int[] pattern in new[] { new[] { 1 }, new[] { 2 }, new[] { 3 }, new[] { 5, 1, 13, 2, 19 } })
        {
            for (int start = 0, c = 0; start < N; c++)
            {
                int rows = Math.Min(pattern[c % pattern.Length], N - start);
                float[] part = new float[rows * outFeatures];
                MatMul.Multiply(x.AsSpan(start * k, rows * k), rows, w.Tensor, part, _pool, bias);
                AssertBitIdentical(whole.AsSpan(start * outFeatures, rows * outFeatures), part, $"rows {start}..{start + rows} of chunking [{string.Join(", ", pattern)}]");
                start += rows;
            }
        }

        for (MatMulIsa isa = MatMulIsa.Scalar; isa <= MatMul.BestIsa; isa++)
        {
            MatMul.Isa = isa;
            float[] again = new float[N * outFeatures];
            MatMul.Multiply(x, N, w.Tensor, again, _pool, bias);
            float[] single = new float[outFeatures];
            MatMul.Multiply(x.AsSpan(7 * k, k), 1, w.Tensor, single, _pool, bias);
            AssertBitIdentical(whole, again, $"{isa}, all rows");
            AssertBitIdentical(whole.AsSpan(7 * outFeatures, outFeatures), single, $"{isa}, row 7 alone");
        }
    }

    [Theory]
    [InlineData(1, DType.BFloat16)]
    [InlineData(1, DType.Float16)]
    [InlineData(64, DType.BFloat16)]
    [InlineData(64, DType.Float32)]
    public void Multiply_SecondCall_AllocatesNothing(int n, DType dtype)
    {
        const int K = 300;
        const int Out = 200;
        var random = new Random(5);
        float[] x = RandomValues(random, n * K);
        float[] bias = RandomValues(random, Out);
        float[] y = new float[n * Out];
        using var w = new TestWeight(dtype, Out, K, random);

        // No collection between warm-up and measurement: one lets the shared array pool trim, and a re-rental then allocates.
        using var noGc = new KvFetcher.Tests.NoGcRegion();
        MatMul.Multiply(x, n, w.Tensor, y, s_callerOnly, bias);
        MatMul.Multiply(x, n, K, w.Values, Out, y, s_callerOnly);
        long before = GC.GetAllocatedBytesForCurrentThread();
        MatMul.Multiply(x, n, w.Tensor, y, s_callerOnly, bias);
        MatMul.Multiply(x, n, K, w.Values, Out, y, s_callerOnly);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);

        // On several threads too: the caller may pay the pool's one-time lazily made wait object, nothing per call.
        // Every worker's scratch made up front (as the engine does when it loads a model): no product allocates after.
        MatMul.PrepareThreads(_pool);
        MatMul.Multiply(x, n, w.Tensor, y, _pool, bias); // the pool's first product of this shape: its one-time set-up
        var trace = new List<long>(32);
        before = GC.GetAllocatedBytesForCurrentThread();
        long workersBefore = _pool.WorkerAllocatedBytes;
        for (int i = 0; i < 20; i++)
        {
            MatMul.Multiply(x, n, w.Tensor, y, _pool, bias);
            trace.Add(_pool.WorkerAllocatedBytes);
        }

        Assert.InRange(GC.GetAllocatedBytesForCurrentThread() - before, 0, 64);
        Assert.True(_pool.WorkerAllocatedBytes == workersBefore, $"workers' allocated bytes after each call: {string.Join(", ", trace)}");
    }

    [Fact]
    public void Multiply_BadArguments_Throw()
    {
        var random = new Random(3);
        using var w = new TestWeight(DType.BFloat16, 8, 16, random);
        float[] x = new float[2 * 16];
        float[] y = new float[2 * 8];

        Assert.Throws<ArgumentOutOfRangeException>(() => MatMul.Multiply(x, 0, w.Tensor, y, _pool));
        Assert.Throws<ArgumentOutOfRangeException>(() => MatMul.Multiply(x, 3, w.Tensor, y, _pool));
        Assert.Throws<ArgumentOutOfRangeException>(() => MatMul.Multiply(x, 2, w.Tensor, y.AsSpan(1), _pool));
        Assert.Throws<ArgumentOutOfRangeException>(() => MatMul.Multiply(x, 2, w.Tensor, y, _pool, new float[7]));
        Assert.Throws<ArgumentOutOfRangeException>(() => MatMul.Multiply(x, 2, 16, new float[100], 8, y, _pool));

        using var cube = new TestWeight(DType.Float32, 2, 8, random, shape: [2, 2, 4]);
        Assert.Throws<ArgumentException>(() => MatMul.Multiply(x, 1, cube.Tensor, y, _pool));
    }

    [Fact]
    public void Isa_DefaultsToBestAndAcceptsEveryNarrowerOne()
    {
        Assert.Equal(MatMul.BestIsa, MatMul.Isa);
        for (MatMulIsa isa = MatMulIsa.Scalar; isa <= MatMul.BestIsa; isa++)
        {
            MatMul.Isa = isa;
            Assert.Equal(isa, MatMul.Isa);
        }

        if (MatMul.BestIsa < MatMulIsa.Vector512)
        {
            Assert.Throws<NotSupportedException>(() => MatMul.Isa = MatMulIsa.Vector512);
        }
    }

    private static MatMulIsa UseIsa(string isaName)
    {
        MatMulIsa isa = Enum.Parse<MatMulIsa>(isaName);
        if (isa > MatMul.BestIsa)
        {
            Assert.Skip($"{isa} is not accelerated on this machine.");
        }

        MatMul.Isa = isa;
        return isa;
    }

    private static void AssertBitIdentical(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what)
    {
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.True(
                BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]),
                $"{what}: element {i} is {actual[i]:R}, expected {expected[i]:R}");
        }
    }

    private void AssertOneHotProduct(MatMulIsa isa, DType dtype, int n, int k, int outFeatures, float[] values, int[] columns)
    {
        using var w = new TestWeight(dtype, outFeatures, k, values);
        float[] x = new float[n * k];
        for (int i = 0; i < n; i++)
        {
            x[(i * k) + columns[i]] = 1f;
        }

        float[] y = new float[n * outFeatures];
        MatMul.Multiply(x, n, w.Tensor, y, _pool);

        for (int i = 0; i < n; i++)
        {
            for (int o = 0; o < outFeatures; o++)
            {
                float expected = w.Values[(o * k) + columns[i]];
                float actual = y[(i * outFeatures) + o];
                Assert.True(
                    expected.Equals(actual),
                    $"{isa} {dtype} row {i} feature {o}: expected {expected:R}, got {actual:R}");
            }
        }
    }

    private static float[] RandomValues(Random random, int count)
    {
        float[] values = new float[count];
        for (int i = 0; i < count; i++)
        {
            values[i] = (random.NextSingle() * 2f) - 1f;
        }

        return values;
    }

    /// <summary>Values that stress the widening: zeros, subnormals, extremes, Inf and NaN.</summary>
    private static float[] SpecialValues(DType dtype) => dtype switch
    {
        DType.Float16 =>
        [
            0f, -0f, 5.96e-8f, -5.96e-8f, 3.05e-5f, 6.1035156e-5f, 65504f, -65504f, 1f, -2f, 0.333f,
            float.PositiveInfinity, float.NegativeInfinity, float.NaN,
        ],
        DType.BFloat16 =>
        [
            0f, -0f, 1e-39f, -1e-40f, 3.3e38f, -3.3e38f, 1f, -2f, 0.333f,
            float.PositiveInfinity, float.NegativeInfinity, float.NaN,
        ],
        _ => [0f, -0f, 1e-45f, 1e-39f, float.MaxValue, float.MinValue, 1f, 0.1f, float.PositiveInfinity, float.NegativeInfinity, float.NaN],
    };

    private static void AssertMatchesReference(float[] x, int n, int k, float[] w, int outFeatures, float[] bias, float[] y, string what)
    {
        double tolerance = 1e-5 * Math.Sqrt(k);
        for (int i = 0; i < n; i++)
        {
            for (int o = 0; o < outFeatures; o++)
            {
                double sum = bias.Length > 0 ? bias[o] : 0;
                double magnitude = Math.Abs(sum);
                for (int p = 0; p < k; p++)
                {
                    double term = (double)x[(i * k) + p] * w[(o * k) + p];
                    sum += term;
                    magnitude += Math.Abs(term);
                }

                float actual = y[(i * outFeatures) + o];
                double error = Math.Abs(actual - sum);
                Assert.True(
                    error <= tolerance * Math.Max(magnitude, 1e-30),
                    $"{what}: y[{i}, {o}] = {actual:R}, reference {sum:R}, error {error:E2} over {tolerance * magnitude:E2}");
            }
        }
    }

    /// <summary>A weight tensor in unmanaged memory, stored in its dtype, with the exact fp32 values it holds.</summary>
    private sealed class TestWeight : IDisposable
    {
        private readonly byte* _data;

        public TestWeight(DType dtype, int rows, int columns, Random random, int[]? shape = null)
            : this(dtype, rows, columns, RandomValues(random, rows * columns), shape)
        {
        }

        public TestWeight(DType dtype, int rows, int columns, float[] values, int[]? shape = null)
        {
            values = (float[])values.Clone();
            long byteLength = (long)values.Length * dtype.SizeOf();
            _data = (byte*)NativeMemory.Alloc((nuint)byteLength);
            var bytes = new Span<byte>(_data, (int)byteLength);
            FloatConversions.FromSingle(dtype, values, bytes);
            FloatConversions.ToSingle(dtype, bytes, values);
            Values = values;
            Tensor = new WeightTensor("test.weight", dtype, shape ?? [rows, columns], _data, byteLength, this);
        }

        public WeightTensor Tensor { get; }

        /// <summary>The stored values widened back to fp32: what the product must see.</summary>
        public float[] Values { get; }

        public void Dispose() => NativeMemory.Free(_data);
    }
}
