using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using KvFetcher.Codecs.Raw;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Core.Keys;

namespace KvFetcher.Codecs.Tests.Containers;

public class ChunkContainerTests
{
    private static readonly ModelFingerprint s_model = new(new Hash256(1, 2, 3, 4));
    private static readonly ModelFingerprint s_otherModel = new(new Hash256(1, 2, 3, 5));

    internal static (byte[] Container, ChunkExpectation Expected, byte[] Kv) Build(IKvCodec codec, int level, int tokens = 16, DType dtype = DType.Float16)
    {
        const int tokenStart = 64;
        (byte[] kv, KvShape shape) = RealKv.Chunk(tokenStart, tokens, dtype);
        ChunkKey key = ChunkKey.ComputeChain(s_model, "tenant-a", RealKv.TokenIds.AsSpan(0, tokenStart + tokens), tokenStart + tokens)[0];
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        codec.Encode(kv, shape, dtype, tokenStart, level, parameters, payload);
        var header = new ChunkHeader { Codec = codec.Id, Level = (byte)level, DType = dtype, Key = key, Model = s_model, TokenStart = tokenStart, Shape = shape };
        var output = new ArrayBufferWriter<byte>();
        ChunkContainer.Write(header, parameters.WrittenSpan, payload.WrittenSpan, output);
        return (output.WrittenSpan.ToArray(), new ChunkExpectation(key, s_model, tokenStart, shape, dtype), kv);
    }

    [Fact]
    public void WriteRead_RoundTrip_HeaderAndKvIdentical()
    {
        (byte[] container, ChunkExpectation expected, byte[] kv) = Build(RawCodec.Instance, 0);
        var decoded = new byte[kv.Length];
        ChunkHeader header = RawCodec.Instance.DecodeContainer(container, expected, decoded);
        Assert.Equal(kv, decoded);
        Assert.Equal(expected.Key, header.Key);
        Assert.Equal(64, header.TokenStart);
        Assert.Equal(DType.Float16, header.DType);
        Assert.Equal(ChunkContainer.GetSize(0, kv.Length), container.Length);
    }

    [Fact]
    public void Read_OtherModel_RefusedNamingField()
    {
        (byte[] container, ChunkExpectation expected, byte[] kv) = Build(RawCodec.Instance, 0);
        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() => RawCodec.Instance.DecodeContainer(container, expected with { Model = s_otherModel }, new byte[kv.Length]));
        Assert.Contains("model fingerprint at offset 48", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_OtherTenantKey_Refused()
    {
        (byte[] container, ChunkExpectation expected, byte[] kv) = Build(RawCodec.Instance, 0);
        ChunkKey otherTenant = ChunkKey.ComputeChain(s_model, "tenant-b", RealKv.TokenIds.AsSpan(0, 80), 80)[0];
        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() => RawCodec.Instance.DecodeContainer(container, expected with { Key = otherTenant }, new byte[kv.Length]));
        Assert.Contains("chunk key at offset 16", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_OtherPositionOrShape_Refused()
    {
        (byte[] container, ChunkExpectation expected, byte[] kv) = Build(RawCodec.Instance, 0);
        Assert.Contains("token start", Assert.Throws<InvalidKvDataException>(() => RawCodec.Instance.DecodeContainer(container, expected with { TokenStart = 0 }, new byte[kv.Length])).Message, StringComparison.Ordinal);
        Assert.Contains("dtype", Assert.Throws<InvalidKvDataException>(() => RawCodec.Instance.DecodeContainer(container, expected with { DType = DType.BFloat16 }, new byte[kv.Length])).Message, StringComparison.Ordinal);
        Assert.Contains("shape", Assert.Throws<InvalidKvDataException>(() => RawCodec.Instance.DecodeContainer(container, expected with { Shape = expected.Shape with { Layers = 7 } }, new byte[kv.Length])).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_EveryTruncation_Refused()
    {
        (byte[] container, ChunkExpectation expected, byte[] kv) = Build(RawCodec.Instance, 0, tokens: 2);
        for (int length = 0; length < container.Length; length++)
        {
            byte[] truncated = container[..length];
            Assert.Throws<InvalidKvDataException>(() => RawCodec.Instance.DecodeContainer(truncated, expected, new byte[kv.Length]));
        }
    }

    [Fact]
    public void Read_AnySingleBitFlip_RefusedByChecksumOrField()
    {
        (byte[] container, ChunkExpectation expected, byte[] kv) = Build(RawCodec.Instance, 0, tokens: 2);
        for (int bit = 0; bit < container.Length * 8; bit++)
        {
            byte[] mutated = (byte[])container.Clone();
            mutated[bit / 8] ^= (byte)(1 << (bit % 8));
            Assert.Throws<InvalidKvDataException>(() => RawCodec.Instance.DecodeContainer(mutated, expected, new byte[kv.Length]));
        }
    }

    /// <summary>Recomputes the checksum after a mutation, so the mutation reaches the field checks and the codec.</summary>
    internal static void Reseal(byte[] container)
    {
        int end = container.Length - ChunkContainer.ChecksumSize;
        BinaryPrimitives.WriteUInt64LittleEndian(container.AsSpan(end), XxHash3.HashToUInt64(container.AsSpan(0, end)));
    }

    [Fact]
    public void Read_ResealedHeaderMutations_OnlyDomainException()
    {
        (byte[] container, ChunkExpectation expected, byte[] kv) = Build(RawCodec.Instance, 0, tokens: 2);
        var random = new Random(11);
        for (int i = 0; i < 2000; i++)
        {
            byte[] mutated = (byte[])container.Clone();
            int offset = random.Next(ChunkContainer.HeaderSize);
            mutated[offset] = offset == 12 ? (byte)random.Next(3) : (byte)random.Next(256);
            Reseal(mutated);
            try
            {
                RawCodec.Instance.DecodeContainer(mutated, expected, new byte[kv.Length]);
                Assert.Equal(container, mutated); // accepted only when the mutation changed nothing
            }
            catch (InvalidKvDataException)
            {
            }
        }
    }
}
