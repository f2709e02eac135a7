using System.Buffers.Binary;
using KvFetcher.Codecs.Tests;
using KvFetcher.Codecs.Video;
using KvFetcher.Core;
using KvFetcher.Cuda.Nvdec;

namespace KvFetcher.Cuda.Tests.Nvdec;

/// <summary>Reading the K and V streams out of real video-codec chunks (no GPU needed).</summary>
public class VideoChunkStreamsTests
{
    [Theory]
    [MemberData(nameof(NvdecTestStreams.Settings), MemberType = typeof(NvdecTestStreams))]
    public void Parse_RealChunk_FindsBothStreamsWithTheCodecsGeometryAndChecksums(VideoLayoutKind layout, int level)
    {
        (byte[] parameters, byte[] payload) = NvdecTestStreams.EncodeChunk(layout, level);
        (VideoStreamRecord k, VideoStreamRecord v) = VideoChunkStreams.Parse(parameters, payload);
        (_, KvShape shape) = RealKv.Chunk(0, NvdecTestStreams.ChunkTokens, DType.Float16);
        var codec = new VideoCodec(layout);
        (int width, int height, int frames) = codec.Geometry(shape);
        var expected = new NvdecStreamFormat(width, height, level <= 8 ? 8 : level, frames);
        Assert.Equal(expected, k.Format);
        Assert.Equal(expected, v.Format);
        Assert.Equal(12, k.Offset);
        Assert.Equal(k.Offset + k.Length + 12, v.Offset);
        Assert.Equal(payload.Length, v.Offset + v.Length);
        Assert.Equal(HevcStream.Checksum(codec.DecodedFrames(payload, shape, level, 0)), k.Checksum);
        Assert.Equal(HevcStream.Checksum(codec.DecodedFrames(payload, shape, level, 1)), v.Checksum);
    }

    [Fact]
    public void Parse_UnknownVersion_ThrowsNamingTheField()
    {
        (byte[] parameters, byte[] payload) = NvdecTestStreams.EncodeChunk(VideoLayoutKind.TokenTiles, 8);
        parameters[0] = 7;
        InvalidKvDataException e = Assert.Throws<InvalidKvDataException>(() => VideoChunkStreams.Parse(parameters, payload));
        Assert.Contains("format version at offset 0 is 7", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_FrameTooSmallForNvdec_Throws()
    {
        (byte[] parameters, byte[] payload) = NvdecTestStreams.EncodeChunk(VideoLayoutKind.TokenTiles, 8);
        BinaryPrimitives.WriteUInt16LittleEndian(parameters.AsSpan(4), 100);
        InvalidKvDataException e = Assert.Throws<InvalidKvDataException>(() => VideoChunkStreams.Parse(parameters, payload));
        Assert.Contains("Width", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_StreamLengthBeyondPayload_ThrowsNamingTheStream()
    {
        (byte[] parameters, byte[] payload) = NvdecTestStreams.EncodeChunk(VideoLayoutKind.ChannelRows, 8);
        BinaryPrimitives.WriteUInt32LittleEndian(payload, (uint)payload.Length);
        InvalidKvDataException e = Assert.Throws<InvalidKvDataException>(() => VideoChunkStreams.Parse(parameters, payload));
        Assert.Contains("K stream length", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_BytesAfterTheVStream_Throws()
    {
        (byte[] parameters, byte[] payload) = NvdecTestStreams.EncodeChunk(VideoLayoutKind.ChannelRows, 4);
        InvalidKvDataException e = Assert.Throws<InvalidKvDataException>(() => VideoChunkStreams.Parse(parameters, [.. payload, 0]));
        Assert.Contains("1 bytes after the V stream", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_TruncatedPayload_Throws()
    {
        (byte[] parameters, byte[] payload) = NvdecTestStreams.EncodeChunk(VideoLayoutKind.TokenTiles, 4);
        Assert.Throws<InvalidKvDataException>(() => VideoChunkStreams.Parse(parameters, payload.AsSpan(0, payload.Length - 1)));
    }

    [Theory]
    [InlineData(143, 144, 8, 1)]
    [InlineData(144, 8193, 8, 1)]
    [InlineData(144, 144, 9, 1)]
    [InlineData(144, 144, 16, 1)]
    [InlineData(144, 144, 8, 0)]
    public void StreamFormat_Validate_RefusesWhatNvdecCannotDecode(int width, int height, int depth, int frames) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new NvdecStreamFormat(width, height, depth, frames).Validate());

    [Fact]
    public void StreamFormat_OutputBytes_CountsThreePlanesOfTwoByteSamplesAboveEightBits()
    {
        Assert.Equal(256L * 144 * 3 * 5, new NvdecStreamFormat(256, 144, 8, 5).OutputBytes);
        Assert.Equal(256L * 144 * 3 * 5 * 2, new NvdecStreamFormat(256, 144, 10, 5).OutputBytes);
        Assert.Equal(256L * 144 * 5, new NvdecStreamFormat(256, 144, 12, 5).Pixels);
    }
}
