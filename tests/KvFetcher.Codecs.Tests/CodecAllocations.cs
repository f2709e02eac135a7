using System.Buffers;
using KvFetcher.Core;

namespace KvFetcher.Codecs.Tests;

/// <summary>What a codec allocates per chunk once warmed up: pool rentals at most, nothing per token or per plane.</summary>
internal static class CodecAllocations
{
    /// <summary>
    /// Encodes and decodes a 64-token bf16 chunk of real KV once to warm up, then three more times, and asserts the three
    /// allocated less than 1 KB on this thread (a stray allocation per token or per plane would cost far more).
    /// </summary>
    public static void AssertWarmedUpAllocatesNothing(IKvCodec codec)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, 64, DType.BFloat16);
        var parameters = new ArrayBufferWriter<byte>(1 << 16);
        var payload = new ArrayBufferWriter<byte>(1 << 20);
        var decoded = new byte[kv.Length];
        using var noGc = new KvFetcher.Tests.NoGcRegion();
        codec.Encode(kv, shape, DType.BFloat16, 0, 0, parameters, payload);
        codec.Decode(parameters.WrittenSpan, payload.WrittenSpan, shape, DType.BFloat16, 0, 0, decoded);

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 3; i++)
        {
            parameters.ResetWrittenCount();
            payload.ResetWrittenCount();
            codec.Encode(kv, shape, DType.BFloat16, 0, 0, parameters, payload);
            codec.Decode(parameters.WrittenSpan, payload.WrittenSpan, shape, DType.BFloat16, 0, 0, decoded);
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < 1024, $"{allocated} bytes allocated by 3 warmed-up encode + decode calls");
    }
}
