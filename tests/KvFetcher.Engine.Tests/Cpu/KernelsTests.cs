using System.Runtime.Intrinsics;
using KvFetcher.Engine.Cpu;

namespace KvFetcher.Engine.Tests.Cpu;

[Collection(nameof(KernelSwitchGroup))]
public class KernelsTests
{
    private static float[] RandomVector(int length, int seed)
    {
        var random = new Random(seed);
        var v = new float[length];
        for (int i = 0; i < length; i++)
        {
            v[i] = (float)((random.NextDouble() * 2) - 1);
        }

        return v;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(64)]
    [InlineData(129)]
    public void Dot_ScalarAndVectorPaths_GiveIdenticalBits(int length)
    {
        float[] a = RandomVector(length, 1);
        float[] b = RandomVector(length, 2);
        bool saved = Kernels.UseVectors;
        try
        {
            Kernels.UseVectors = true;
            float vector = Kernels.Dot(a, b);
            Kernels.UseVectors = false;
            float scalar = Kernels.Dot(a, b);
            Assert.Equal(BitConverter.SingleToInt32Bits(vector), BitConverter.SingleToInt32Bits(scalar));
            double reference = 0;
            for (int i = 0; i < length; i++)
            {
                reference += (double)a[i] * b[i];
            }

            Assert.Equal(reference, scalar, 1e-5);
        }
        finally
        {
            Kernels.UseVectors = saved;
        }
    }

    [Fact]
    public void Dot_SameRowAtAnyOffset_GivesSameBits()
    {
        float[] a = RandomVector(64, 3);
        float[] b = RandomVector(64, 4);
        float expected = Kernels.Dot(a, b);
        for (int offset = 1; offset < 9; offset++)
        {
            var shifted = new float[64 + offset];
            a.CopyTo(shifted, offset);
            Assert.Equal(expected, Kernels.Dot(shifted.AsSpan(offset), b));
        }
    }

    [Fact]
    public void Exp_MatchesMathExp_WithinFewUlps()
    {
        for (float x = -87f; x <= 0f; x += 0.0137f)
        {
            float actual = Kernels.Exp(Vector256.Create(x)).GetElement(0);
            double expected = Math.Exp(x);
            Assert.True(Math.Abs(actual - expected) <= 3e-7 * expected, $"exp({x}) = {actual}, expected {expected}");
        }

        Assert.Equal(0f, Kernels.Exp(Vector256.Create(float.NegativeInfinity)).GetElement(0));
        Assert.Equal(0f, Kernels.Exp(Vector256.Create(-200f)).GetElement(0));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    [InlineData(8)]
    [InlineData(37)]
    public void ExpSubtractMaxAndSum_IsSoftmaxNumerator(int length)
    {
        float[] x = RandomVector(length, 5);
        float max = x.Max();
        float[] expected = x.Select(v => MathF.Exp(v - max)).ToArray();
        float sum = Kernels.ExpSubtractMaxAndSum(x, max);
        Assert.Equal(expected.Sum(), sum, 1e-5f);
        for (int i = 0; i < length; i++)
        {
            Assert.Equal(expected[i], x[i], 1e-6f);
        }
    }

    [Fact]
    public void RmsNorm_MatchesDefinition()
    {
        float[] x = RandomVector(384, 6);
        float[] w = RandomVector(384, 7);
        var y = new float[384];
        Kernels.RmsNorm(x, w, 1e-5f, y);
        double meanSquare = x.Select(v => (double)v * v).Average();
        double scale = 1 / Math.Sqrt(meanSquare + 1e-5);
        for (int i = 0; i < x.Length; i++)
        {
            Assert.Equal(w[i] * x[i] * scale, y[i], 1e-5);
        }
    }

    [Fact]
    public void Rope_RotatesHalves()
    {
        float[] v = [1, 2, 3, 4];
        Kernels.Rope(v, heads: 1, headDim: 4, cos: [0.5f, 1f], sin: [0.25f, 0f]);
        Assert.Equal([(1 * 0.5f) - (3 * 0.25f), 2f, (3 * 0.5f) + (1 * 0.25f), 4f], v);
    }

    [Fact]
    public void ArgMax_Ties_ReturnFirst()
    {
        Assert.Equal(1, Kernels.ArgMax([0f, 3f, 3f, -1f]));
    }
}

[CollectionDefinition(nameof(KernelSwitchGroup), DisableParallelization = true)]
public sealed class KernelSwitchGroup;
