using KvFetcher.Core.Numerics;

namespace KvFetcher.Core.Tests.Numerics;

public class FloatConversionsTests
{
    [Theory]
    [InlineData(1.0f, 0x3F80)]
    [InlineData(-2.0f, 0xC000)]
    [InlineData(3.140625f, 0x4049)]
    [InlineData(1.00390625f, 0x3F80)] // exactly halfway between 0x3F80 and 0x3F81: ties to even
    [InlineData(1.01171875f, 0x3F82)] // halfway between 0x3F81 and 0x3F82: ties to even
    [InlineData(1.0078125f, 0x3F81)]
    public void SingleToBFloat16_RoundsToNearestEven(float value, int expected)
    {
        Assert.Equal((ushort)expected, FloatConversions.SingleToBFloat16(value));
    }

    [Fact]
    public void SingleToBFloat16_NaN_StaysNaN()
    {
        Assert.True(float.IsNaN(FloatConversions.BFloat16ToSingle(FloatConversions.SingleToBFloat16(float.NaN))));
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.Float16)]
    [InlineData(DType.BFloat16)]
    public void FromSingleToSingle_OfRoundedValues_IsExact(DType dtype)
    {
        var random = new Random(1);
        float[] values = new float[37];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = (float)((random.NextDouble() - 0.5) * 100);
        }

        FloatConversions.RoundTo(dtype, values);
        byte[] bytes = new byte[values.Length * dtype.SizeOf()];
        FloatConversions.FromSingle(dtype, values, bytes);
        float[] back = new float[values.Length];
        FloatConversions.ToSingle(dtype, bytes, back);
        Assert.Equal(values, back);
    }

    [Fact]
    public void BFloat16ToSingle_VectorAndScalarTail_Agree()
    {
        ushort[] bits = Enumerable.Range(0, 35).Select(i => (ushort)(0x3F00 + (i * 37))).ToArray();
        float[] wide = new float[bits.Length];
        FloatConversions.BFloat16ToSingle(bits, wide);
        for (int i = 0; i < bits.Length; i++)
        {
            Assert.Equal(FloatConversions.BFloat16ToSingle(bits[i]), wide[i]);
        }
    }
}
