using KvFetcher.Codecs.Tests;
using KvFetcher.Codecs.Video;
using KvFetcher.Core;
using KvFetcher.Cuda.Nvdec;
using KvFetcher.Cuda.Reuse;

namespace KvFetcher.Cuda.Tests.Nvdec;

/// <summary>
/// Handing real video-codec chunks to NVDEC (no GPU needed): the chunk is read with the codec's own
/// <see cref="VideoChunkFormat"/> (tested in KvFetcher.Codecs.Tests), the frames mapped to NVDEC's format here.
/// </summary>
public class NvdecVideoStreamsTests
{
    [Theory]
    [MemberData(nameof(NvdecTestStreams.Settings), MemberType = typeof(NvdecTestStreams))]
    public void FormatOf_RealChunk_IsTheCodecsGeometryAtTheFrameDepth(VideoLayoutKind layout, int level)
    {
        (byte[] parameters, _) = NvdecTestStreams.EncodeChunk(layout, level);
        (_, KvShape shape) = RealKv.Chunk(0, NvdecTestStreams.ChunkTokens, DType.Float16);
        int scales = shape.Layers * 2 * shape.Channels;

        NvdecStreamFormat format = NvdecVideoStreams.FormatOf(VideoChunkFormat.ReadParameters(parameters, shape, level, new float[scales], new float[scales]));

        (int width, int height, int frames) = new VideoCodec(layout).Geometry(shape);
        Assert.Equal(new NvdecStreamFormat(width, height, level <= 8 ? 8 : level, frames), format);
    }

    [Fact]
    public void FormatOf_FrameTooSmallForNvdec_ThrowsInvalidKvData()
    {
        var header = new VideoChunkHeader(VideoLayoutKind.TokenTiles, 8, 100, 144, 4);

        InvalidKvDataException e = Assert.Throws<InvalidKvDataException>(() => NvdecVideoStreams.FormatOf(header));

        Assert.Contains("Width", e.Message, StringComparison.Ordinal);
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
