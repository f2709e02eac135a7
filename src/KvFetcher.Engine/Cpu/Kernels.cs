using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace KvFetcher.Engine.Cpu;

/// <summary>
/// The element-wise and reduction kernels of the forward pass. Reductions accumulate in a fixed order that depends
/// only on the length (never on memory alignment), so a row gives the same bits wherever it sits in a buffer: this is
/// what makes chunked prefill and restored KV bit-identical to a one-shot prefill.
/// </summary>
internal static class Kernels
{
    /// <summary>Set to false by tests to run the scalar paths.</summary>
    internal static bool UseVectors { get; set; } = Vector256.IsHardwareAccelerated;

    /// <summary>Σ a[i]·b[i], in the fixed order: eight lane partial sums, then a fixed tree, then the tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        int length = a.Length;
        ref float ra = ref MemoryMarshal.GetReference(a);
        ref float rb = ref MemoryMarshal.GetReference(b);
        int i = 0;
        float sum;
        if (UseVectors && length >= Vector256<float>.Count)
        {
            Vector256<float> acc = Vector256<float>.Zero;
            for (; i <= length - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                acc = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref ra, (nuint)i), Vector256.LoadUnsafe(ref rb, (nuint)i), acc);
            }

            sum = HorizontalSum(acc);
        }
        else
        {
            sum = ScalarLanes(ref ra, ref rb, ref i, length);
        }

        for (; i < length; i++)
        {
            sum = MathF.FusedMultiplyAdd(Unsafe.Add(ref ra, i), Unsafe.Add(ref rb, i), sum);
        }

        return sum;
    }

    /// <summary>The scalar twin of the vector loop in <see cref="Dot"/>: the same lanes, the same order.</summary>
    private static float ScalarLanes(ref float ra, ref float rb, ref int i, int length)
    {
        const int Lanes = 8;
        if (length < Lanes)
        {
            return 0f;
        }

        Span<float> acc = stackalloc float[Lanes];
        acc.Clear();
        for (; i <= length - Lanes; i += Lanes)
        {
            for (int lane = 0; lane < Lanes; lane++)
            {
                acc[lane] = MathF.FusedMultiplyAdd(Unsafe.Add(ref ra, i + lane), Unsafe.Add(ref rb, i + lane), acc[lane]);
            }
        }

        // Same tree as HorizontalSum: (0+4, 1+5, 2+6, 3+7), then (0+2, 1+3), then 0+1.
        float s0 = acc[0] + acc[4], s1 = acc[1] + acc[5], s2 = acc[2] + acc[6], s3 = acc[3] + acc[7];
        float t0 = s0 + s2, t1 = s1 + s3;
        return t0 + t1;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float HorizontalSum(Vector256<float> v)
    {
        Vector128<float> s = v.GetLower() + v.GetUpper();
        float t0 = s.GetElement(0) + s.GetElement(2);
        float t1 = s.GetElement(1) + s.GetElement(3);
        return t0 + t1;
    }

    /// <summary>y = x · rsqrt(mean(x²) + eps) · weight, as Hugging Face's RMSNorm in fp32.</summary>
    public static void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, Span<float> y)
    {
        float sumSquares = Dot(x, x);
        float scale = 1f / MathF.Sqrt((sumSquares / x.Length) + eps);
        for (int i = 0; i < x.Length; i++)
        {
            y[i] = weight[i] * (x[i] * scale);
        }
    }

    /// <summary>
    /// Applies the rotary embedding in place to each head of <paramref name="vector"/> ([heads, headDim]) with the
    /// half-split convention of Hugging Face (<c>x·cos + rotate_half(x)·sin</c>).
    /// </summary>
    public static void Rope(Span<float> vector, int heads, int headDim, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int half = headDim / 2;
        for (int h = 0; h < heads; h++)
        {
            Span<float> head = vector.Slice(h * headDim, headDim);
            for (int i = 0; i < half; i++)
            {
                float a = head[i];
                float b = head[i + half];
                head[i] = (a * cos[i]) - (b * sin[i]);
                head[i + half] = (b * cos[i]) + (a * sin[i]);
            }
        }
    }

    /// <summary>gate = silu(gate) · up, element-wise.</summary>
    public static void SwiGlu(Span<float> gate, ReadOnlySpan<float> up)
    {
        for (int i = 0; i < gate.Length; i++)
        {
            float g = gate[i];
            gate[i] = g / (1f + MathF.Exp(-g)) * up[i];
        }
    }

    /// <summary>
    /// In place: x[i] = exp(x[i] - max), returning Σ. Every element goes through the same vector approximation
    /// (the tail is padded), so the result of an element does not depend on where it sits.
    /// </summary>
    public static float ExpSubtractMaxAndSum(Span<float> x, float max)
    {
        int length = x.Length;
        int i = 0;
        float sum = 0f;
        ref float r = ref MemoryMarshal.GetReference(x);
        Vector256<float> vmax = Vector256.Create(max);
        for (; i <= length - Vector256<float>.Count; i += Vector256<float>.Count)
        {
            Vector256<float> e = Exp(Vector256.LoadUnsafe(ref r, (nuint)i) - vmax);
            e.StoreUnsafe(ref r, (nuint)i);
            sum += HorizontalSum(e);
        }

        if (i < length)
        {
            Span<float> tail = stackalloc float[Vector256<float>.Count];
            tail.Fill(float.NegativeInfinity);
            x[i..].CopyTo(tail);
            Vector256<float> e = Exp(Vector256.Create<float>(tail) - vmax);
            e.CopyTo(tail);
            tail[..(length - i)].CopyTo(x[i..]);
            sum += HorizontalSum(e);
        }

        return sum;
    }

    /// <summary>
    /// exp(x) for x ≤ 0 (softmax inputs after subtracting the max): Cody-Waite reduction x = n·ln2 + r and a degree-7
    /// polynomial on |r| ≤ ln2/2 (relative error below 1e-7); inputs below -87 give 0.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Exp(Vector256<float> x)
    {
        Vector256<float> lowest = Vector256.Create(-87.3f);
        Vector256<float> tooSmall = Vector256.LessThan(x, lowest);
        x = Vector256.Max(x, lowest);
        Vector256<float> n = Vector256.Round(x * Vector256.Create(1.44269504088896341f));
        Vector256<float> r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-0.693359375f), x);
        r = Vector256.FusedMultiplyAdd(n, Vector256.Create(2.12194440e-4f), r);
        Vector256<float> p = Vector256.Create(1f / 5040f);
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1f / 720f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1f / 120f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1f / 24f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1f / 6f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(0.5f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256<float>.One);
        p = Vector256.FusedMultiplyAdd(p, r, Vector256<float>.One);
        Vector256<int> bits = (Vector256.ConvertToInt32(n) + Vector256.Create(127)) << 23;
        Vector256<float> result = p * bits.AsSingle();
        return Vector256.AndNot(result, tooSmall);
    }

    /// <summary>y += a · x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void MultiplyAdd(ReadOnlySpan<float> x, float a, Span<float> y)
    {
        int length = x.Length;
        ref float rx = ref MemoryMarshal.GetReference(x);
        ref float ry = ref MemoryMarshal.GetReference(y);
        int i = 0;
        if (UseVectors)
        {
            Vector256<float> va = Vector256.Create(a);
            for (; i <= length - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref rx, (nuint)i), va, Vector256.LoadUnsafe(ref ry, (nuint)i)).StoreUnsafe(ref ry, (nuint)i);
            }
        }

        for (; i < length; i++)
        {
            Unsafe.Add(ref ry, i) = MathF.FusedMultiplyAdd(Unsafe.Add(ref rx, i), a, Unsafe.Add(ref ry, i));
        }
    }

    /// <summary>Index of the first largest value (as torch.argmax).</summary>
    public static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        float bestValue = values[0];
        for (int i = 1; i < values.Length; i++)
        {
            if (values[i] > bestValue)
            {
                bestValue = values[i];
                best = i;
            }
        }

        return best;
    }
}
