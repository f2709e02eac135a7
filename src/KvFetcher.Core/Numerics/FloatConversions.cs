using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace KvFetcher.Core.Numerics;

/// <summary>
/// Conversions between fp32 and the 16-bit storage types. bf16 uses round-to-nearest-even, as PyTorch does;
/// fp16 uses <see cref="Half"/>'s IEEE rounding through <see cref="TensorPrimitives"/>.
/// </summary>
public static class FloatConversions
{
    /// <summary>bf16 bits to fp32 (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float BFloat16ToSingle(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>fp32 to bf16 bits, round-to-nearest-even; NaN stays NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort SingleToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFF_FFFF) > 0x7F80_0000)
        {
            return (ushort)((bits >> 16) | 0x0040);
        }

        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>Widens bf16 values to fp32.</summary>
    public static void BFloat16ToSingle(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(destination.Length, source.Length, nameof(destination));
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref ushort src = ref MemoryMarshal.GetReference(source);
            ref float dst = ref MemoryMarshal.GetReference(destination);
            for (; i <= source.Length - Vector256<uint>.Count; i += Vector256<uint>.Count)
            {
                Vector128<ushort> packed = Vector128.LoadUnsafe(ref src, (nuint)i);
                Vector256<uint> wide = Vector256.WidenLower(packed.ToVector256Unsafe()) << 16;
                wide.AsSingle().StoreUnsafe(ref dst, (nuint)i);
            }
        }

        for (; i < source.Length; i++)
        {
            destination[i] = BFloat16ToSingle(source[i]);
        }
    }

    /// <summary>Narrows fp32 values to bf16 (round-to-nearest-even).</summary>
    public static void SingleToBFloat16(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(destination.Length, source.Length, nameof(destination));
        for (int i = 0; i < source.Length; i++)
        {
            destination[i] = SingleToBFloat16(source[i]);
        }
    }

    /// <summary>Widens fp16 values to fp32.</summary>
    public static void HalfToSingle(ReadOnlySpan<Half> source, Span<float> destination) =>
        TensorPrimitives.ConvertToSingle(source, destination);

    /// <summary>Narrows fp32 values to fp16 (IEEE round-to-nearest-even).</summary>
    public static void SingleToHalf(ReadOnlySpan<float> source, Span<Half> destination) =>
        TensorPrimitives.ConvertToHalf(source, destination);

    /// <summary>Widens raw little-endian elements of <paramref name="dtype"/> to fp32.</summary>
    public static void ToSingle(DType dtype, ReadOnlySpan<byte> source, Span<float> destination)
    {
        switch (dtype)
        {
            case DType.Float32:
                MemoryMarshal.Cast<byte, float>(source).CopyTo(destination);
                break;
            case DType.Float16:
                HalfToSingle(MemoryMarshal.Cast<byte, Half>(source), destination);
                break;
            case DType.BFloat16:
                BFloat16ToSingle(MemoryMarshal.Cast<byte, ushort>(source), destination);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown dtype.");
        }
    }

    /// <summary>Narrows fp32 values to raw little-endian elements of <paramref name="dtype"/>.</summary>
    public static void FromSingle(DType dtype, ReadOnlySpan<float> source, Span<byte> destination)
    {
        switch (dtype)
        {
            case DType.Float32:
                MemoryMarshal.AsBytes(source).CopyTo(destination);
                break;
            case DType.Float16:
                SingleToHalf(source, MemoryMarshal.Cast<byte, Half>(destination));
                break;
            case DType.BFloat16:
                SingleToBFloat16(source, MemoryMarshal.Cast<byte, ushort>(destination));
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown dtype.");
        }
    }

    /// <summary>
    /// Rounds fp32 values in place to the nearest value representable in <paramref name="dtype"/>, so that a later
    /// export in that dtype and re-import is exact.
    /// </summary>
    public static void RoundTo(DType dtype, Span<float> values)
    {
        switch (dtype)
        {
            case DType.Float32:
                break;
            case DType.Float16:
                for (int i = 0; i < values.Length; i++)
                {
                    values[i] = (float)(Half)values[i];
                }

                break;
            case DType.BFloat16:
                for (int i = 0; i < values.Length; i++)
                {
                    values[i] = BFloat16ToSingle(SingleToBFloat16(values[i]));
                }

                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown dtype.");
        }
    }
}
