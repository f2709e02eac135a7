using System.Buffers;
using KvFetcher.Core.Containers;
using KvFetcher.Core.Keys;

namespace KvFetcher.Core.Tests.Containers;

/// <summary>
/// The streaming check agrees with the whole-container check, whatever the slicing: the header as soon as it has
/// passed, the checksum only once the last byte has.
/// </summary>
public class ContainerStreamCheckTests
{
    private static byte[] Container(bool authenticated = false)
    {
        var header = new ChunkHeader
        {
            Codec = CodecId.Raw,
            DType = DType.Float16,
            Key = new ChunkKey(new Hash256(1, 2, 3, 4)),
            Model = new ModelFingerprint(new Hash256(5, 6, 7, 8)),
            TokenStart = 256,
            Shape = new KvShape(Layers: 2, Tokens: 16, KvHeads: 1, HeadDim: 8),
        };
        byte[] payload = new byte[header.Shape.Elements * 2];
        new Random(3).NextBytes(payload);
        var output = new ArrayBufferWriter<byte>();
        ChunkMacKey? mac = authenticated ? new ChunkAuthenticator(new byte[32]).ForTenant("t") : null;
        ChunkContainer.Write(header, [], payload, output, mac);
        return output.WrittenSpan.ToArray();
    }

    private static void Pass(ContainerStreamCheck check, byte[] bytes, int slice)
    {
        for (int at = 0; at < bytes.Length; at += slice)
        {
            check.Append(bytes.AsSpan(at, Math.Min(slice, bytes.Length - at)));
        }
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(7, false)]
    [InlineData(128, true)]
    [InlineData(300, false)]
    [InlineData(1 << 20, true)]
    public void Append_IntactContainerAnySlicing_HeaderThenChecksumHold(int slice, bool authenticated)
    {
        byte[] bytes = Container(authenticated);
        var check = new ContainerStreamCheck(bytes.Length);

        Pass(check, bytes, slice);
        check.Complete();

        Assert.True(check.IsComplete);
        Assert.Equal(ChunkContainer.Read(bytes, out _, out _), check.Header);
    }

    [Theory]
    [InlineData(200)]   // payload
    [InlineData(-3)]    // the checksum itself
    [InlineData(20)]    // the chunk key: only the checksum catches it
    public void Complete_AnyFlippedByteAfterTheStructure_Refused(int at)
    {
        byte[] bytes = Container();
        bytes[at < 0 ? bytes.Length + at : at] ^= 0x04;
        Assert.False(ChunkContainer.IsIntact(bytes));
        var check = new ContainerStreamCheck(bytes.Length);

        Pass(check, bytes, 64);

        InvalidKvDataException refused = Assert.Throws<InvalidKvDataException>(check.Complete);
        Assert.Contains("checksum", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Append_BadHeader_RefusedWhenTheHeaderHasPassed()
    {
        byte[] bytes = Container();
        bytes[8] = 9; // version
        var check = new ContainerStreamCheck(bytes.Length);

        check.Append(bytes.AsSpan(0, 100)); // not all of the header yet
        Assert.Null(check.Header);
        InvalidKvDataException refused = Assert.Throws<InvalidKvDataException>(() => check.Append(bytes.AsSpan(100, 100)));
        Assert.Contains("version", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Append_LengthOtherThanTheHeaderSays_RefusedAtTheHeader()
    {
        byte[] bytes = Container();
        var check = new ContainerStreamCheck(bytes.Length + 10);

        InvalidKvDataException refused = Assert.Throws<InvalidKvDataException>(() => check.Append(bytes));
        Assert.Contains("payload length", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AppendAndComplete_TooManyOrTooFewBytes_Refused()
    {
        byte[] bytes = Container();
        var check = new ContainerStreamCheck(bytes.Length);
        check.Append(bytes.AsSpan(0, bytes.Length - 1));

        Assert.Throws<InvalidKvDataException>(check.Complete);
        Assert.Throws<InvalidKvDataException>(() => check.Append(new byte[2]));
        Assert.Throws<InvalidKvDataException>(() => new ContainerStreamCheck(ChunkContainer.HeaderSize));
    }
}
