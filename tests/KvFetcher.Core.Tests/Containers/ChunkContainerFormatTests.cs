using System.Buffers;
using System.Security.Cryptography;
using KvFetcher.Core.Containers;
using KvFetcher.Core.Keys;

namespace KvFetcher.Core.Tests.Containers;

/// <summary>
/// The container's bytes on disk and on the wire, pinned: a fixed chunk must always frame to the same bytes (digests
/// taken when the format moved from Codecs to Core, unchanged since), and read back to the same header.
/// </summary>
public class ChunkContainerFormatTests
{
    private static readonly ChunkHeader s_header = new()
    {
        Codec = CodecId.Video,
        Level = 8,
        DType = DType.BFloat16,
        Key = new ChunkKey(new Hash256(0x0102030405060708, 0x1112131415161718, 0x2122232425262728, 0x3132333435363738)),
        Model = new ModelFingerprint(new Hash256(0x4142434445464748, 0x5152535455565758, 0x6162636465666768, 0x7172737475767778)),
        TokenStart = 512,
        Shape = new KvShape(Layers: 3, Tokens: 256, KvHeads: 2, HeadDim: 64),
    };

    private static readonly byte[] s_parameters = [.. Enumerable.Range(0, 40).Select(i => (byte)(i * 7))];
    private static readonly byte[] s_payload = [.. Enumerable.Range(0, 1000).Select(i => (byte)(i * 13 + 5))];

    [Theory]
    [InlineData(false, 1176, "12B5963615B666F9542AECDABA340D1AEBB768A746FF615F908333CB3A217B4D")]
    [InlineData(true, 1208, "E950AA6381DA66FE6C1EA90CDB3C8C08E4F4A40CE0DF365A586ED6A0C7D55EE7")]
    public void Write_FixedChunk_SameBytesAsEver(bool authenticated, int length, string digest)
    {
        ChunkMacKey? mac = authenticated ? new ChunkAuthenticator(new byte[32]).ForTenant("tenant-a") : null;
        var output = new ArrayBufferWriter<byte>();

        ChunkContainer.Write(s_header, s_parameters, s_payload, output, mac);

        Assert.Equal(length, output.WrittenCount);
        Assert.Equal(ChunkContainer.GetSize(s_parameters.Length, s_payload.Length, authenticated), output.WrittenCount);
        Assert.Equal(digest, Convert.ToHexString(SHA256.HashData(output.WrittenSpan)));
        Assert.True(output.WrittenSpan[..8].SequenceEqual("KVFCHUNK"u8));
    }

    [Fact]
    public void Read_FixedChunk_HeaderAndSectionsBack()
    {
        var output = new ArrayBufferWriter<byte>();
        ChunkContainer.Write(s_header, s_parameters, s_payload, output);

        ChunkHeader header = ChunkContainer.Read(output.WrittenSpan, out ReadOnlySpan<byte> parameters, out ReadOnlySpan<byte> payload);

        Assert.Equal(s_header, header);
        Assert.True(parameters.SequenceEqual(s_parameters));
        Assert.True(payload.SequenceEqual(s_payload));
        Assert.True(ChunkContainer.IsIntact(output.WrittenSpan));
    }
}
