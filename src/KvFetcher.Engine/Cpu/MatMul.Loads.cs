using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using KvFetcher.Core.Numerics;

namespace KvFetcher.Engine.Cpu;

internal static unsafe partial class MatMul
{
    /// <summary>
    /// Reads weight elements of one stored dtype and widens them to fp32, in registers. Kernels are generic over
    /// it, so each dtype gets its own compiled loop with no per-element branch.
    /// </summary>
    private interface IWeightLoad
    {
        /// <summary>Bytes per stored element.</summary>
        static abstract int ElementSize { get; }

        /// <summary>Element <paramref name="index"/> of the row that starts at <paramref name="row"/>.</summary>
        static abstract float Scalar(byte* row, nint index);

        /// <summary>Elements [index, index + 8).</summary>
        static abstract Vector256<float> Load8(byte* row, nint index);

        /// <summary>Elements [index, index + 16).</summary>
        static abstract Vector512<float> Load16(byte* row, nint index);

        /// <summary>
        /// For a vector of raw 32-bit lanes: the lane itself for fp32; for 16-bit types, the first (lower-addressed)
        /// element of each lane's pair.
        /// </summary>
        static abstract Vector512<float> Low512(Vector512<uint> lanes);

        /// <summary>For 16-bit types, the second element of each lane's pair (unused for fp32).</summary>
        static abstract Vector512<float> High512(Vector512<uint> lanes);

        /// <inheritdoc cref="Low512"/>
        static abstract Vector256<float> Low256(Vector256<uint> lanes);

        /// <inheritdoc cref="High512"/>
        static abstract Vector256<float> High256(Vector256<uint> lanes);
    }

    private readonly struct Float32Load : IWeightLoad
    {
        public static int ElementSize => 4;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Scalar(byte* row, nint index) => ((float*)row)[index];

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load8(byte* row, nint index) => Vector256.Load((float*)row + index);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load16(byte* row, nint index) => Vector512.Load((float*)row + index);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Low512(Vector512<uint> lanes) => lanes.AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> High512(Vector512<uint> lanes) => lanes.AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Low256(Vector256<uint> lanes) => lanes.AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> High256(Vector256<uint> lanes) => lanes.AsSingle();
    }

    /// <summary>bf16 is the top half of an fp32: widening is a zero-extend and a shift.</summary>
    private readonly struct BFloat16Load : IWeightLoad
    {
        public static int ElementSize => 2;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Scalar(byte* row, nint index) => FloatConversions.BFloat16ToSingle(((ushort*)row)[index]);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load8(byte* row, nint index)
        {
            Vector256<uint> wide = Vector256.WidenLower(Vector128.Load((ushort*)row + index).ToVector256Unsafe());
            return (wide << 16).AsSingle();
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load16(byte* row, nint index)
        {
            Vector512<uint> wide = Vector512.WidenLower(Vector256.Load((ushort*)row + index).ToVector512Unsafe());
            return (wide << 16).AsSingle();
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Low512(Vector512<uint> lanes) => (lanes << 16).AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> High512(Vector512<uint> lanes) => (lanes & Vector512.Create(0xFFFF_0000u)).AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Low256(Vector256<uint> lanes) => (lanes << 16).AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> High256(Vector256<uint> lanes) => (lanes & Vector256.Create(0xFFFF_0000u)).AsSingle();
    }

    /// <summary>
    /// IEEE fp16, widened exactly with integer operations: the exponent and mantissa bits are moved into fp32
    /// position and scaled by 2^112 (which also turns fp16 subnormals into the right normal fp32 values); Inf and
    /// NaN get the all-ones exponent back; the sign is put in place last.
    /// </summary>
    private readonly struct Float16Load : IWeightLoad
    {
        private const uint ExponentMantissaMask = 0x7FFF;
        private const uint SignMask = 0x8000;
        private const uint MaxFinite = 0x7BFF;
        private const uint Fp32ExponentMask = 0x7F80_0000;
        private const float Scale = 5.192297E+33f; // 2^112 = 2^(127 - 15)

        public static int ElementSize => 2;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Scalar(byte* row, nint index) => (float)((Half*)row)[index];

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load8(byte* row, nint index) =>
            FromBits(Vector256.WidenLower(Vector128.Load((ushort*)row + index).ToVector256Unsafe()));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load16(byte* row, nint index) =>
            FromBits(Vector512.WidenLower(Vector256.Load((ushort*)row + index).ToVector512Unsafe()));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Low512(Vector512<uint> lanes) => FromBits(lanes & Vector512.Create(0xFFFFu));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> High512(Vector512<uint> lanes) => FromBits(lanes >>> 16);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Low256(Vector256<uint> lanes) => FromBits(lanes & Vector256.Create(0xFFFFu));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> High256(Vector256<uint> lanes) => FromBits(lanes >>> 16);

        /// <summary>fp16 bit patterns, one per 32-bit lane (upper half zero), to fp32.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector256<float> FromBits(Vector256<uint> h)
        {
            Vector256<uint> em = h & Vector256.Create(ExponentMantissaMask);
            Vector256<float> magnitude = (em << 13).AsSingle() * Vector256.Create(Scale);
            Vector256<uint> special = Vector256.GreaterThan(em, Vector256.Create(MaxFinite)) & Vector256.Create(Fp32ExponentMask);
            Vector256<uint> sign = (h & Vector256.Create(SignMask)) << 16;
            return (magnitude.AsUInt32() | special | sign).AsSingle();
        }

        /// <inheritdoc cref="FromBits(Vector256{uint})"/>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector512<float> FromBits(Vector512<uint> h)
        {
            Vector512<uint> em = h & Vector512.Create(ExponentMantissaMask);
            Vector512<float> magnitude = (em << 13).AsSingle() * Vector512.Create(Scale);
            Vector512<uint> special = Vector512.GreaterThan(em, Vector512.Create(MaxFinite)) & Vector512.Create(Fp32ExponentMask);
            Vector512<uint> sign = (h & Vector512.Create(SignMask)) << 16;
            return (magnitude.AsUInt32() | special | sign).AsSingle();
        }
    }
}
