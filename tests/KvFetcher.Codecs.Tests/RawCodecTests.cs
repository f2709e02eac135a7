using System.Buffers;
using KvFetcher.Codecs.Raw;
using KvFetcher.Core;

namespace KvFetcher.Codecs.Tests;

public class RawCodecTests
{
    [Theory]
    [InlineData(DType.Float16)]
    [InlineData(DType.BFloat16)]
    public void RoundTrip_RealKv_BitIdentical(DType dtype)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(256, 256, dtype);
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        RawCodec.Instance.Encode(kv, shape, dtype, 0, 0, parameters, payload);
        var decoded = new byte[kv.Length];
        RawCodec.Instance.Decode(parameters.WrittenSpan, payload.WrittenSpan, shape, dtype, 0, 0, decoded);
        Assert.Equal(kv, decoded);
    }

    [Fact]
    public void Decode_ShortPayload_Throws()
    {
        var shape = new KvShape(1, 2, 1, 4);
        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() => RawCodec.Instance.Decode([], new byte[5], shape, DType.Float16, 0, 0, new byte[32]));
        Assert.Contains("payload length 5", ex.Message, StringComparison.Ordinal);
    }
}
