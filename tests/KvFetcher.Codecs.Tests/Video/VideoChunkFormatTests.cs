using System.Buffers;
using System.Buffers.Binary;
using KvFetcher.Codecs.Video;
using KvFetcher.Core;

namespace KvFetcher.Codecs.Tests.Video;

/// <summary>
/// The one reader of the <c>video</c> chunk format: what the CPU codec and the NVDEC restore (which reads both stream
/// records before starting them together) accept and refuse.
/// </summary>
public class VideoChunkFormatTests
{
    private const int Tokens = 256;

    [Theory]
    [InlineData(VideoLayoutKind.TokenTiles, 8)]
    [InlineData(VideoLayoutKind.ChannelRows, 10)]
    public void ReadParametersAndStreams_RealChunk_GiveTheCodecsGeometryOffsetsAndChecksums(VideoLayoutKind layout, int level)
    {
        (byte[] parameters, byte[] payload, KvShape shape, VideoCodec codec) = EncodeChunk(layout, level);
        int scales = shape.Layers * 2 * shape.Channels;

        VideoChunkHeader header = VideoChunkFormat.ReadParameters(parameters, shape, level, new float[scales], new float[scales]);
        (VideoStreamRecord k, VideoStreamRecord v) = VideoChunkFormat.ReadStreams(payload);

        (int width, int height, int frames) = codec.Geometry(shape);
        Assert.Equal(new VideoChunkHeader(layout, level, width, height, frames), header);
        Assert.Equal(level <= 8 ? 8 : level, header.FrameDepth);
        Assert.Equal(VideoChunkFormat.RecordHeaderBytes, k.Offset);
        Assert.Equal(k.End + VideoChunkFormat.RecordHeaderBytes, v.Offset);
        Assert.Equal(payload.Length, v.End);
        Assert.Equal(HevcStream.Checksum(codec.DecodedFrames(payload, shape, level, 0)), k.Checksum);
        Assert.Equal(HevcStream.Checksum(codec.DecodedFrames(payload, shape, level, 1)), v.Checksum);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void Decode_ZeroLengthStream_CodecAndStreamReaderRefuseItWithOneMessage(int kind)
    {
        (byte[] parameters, byte[] payload, KvShape shape, VideoCodec codec) = EncodeChunk(VideoLayoutKind.TokenTiles, 8);
        int recordAt = kind == 0 ? 0 : VideoChunkFormat.RecordHeaderBytes + BinaryPrimitives.ReadInt32LittleEndian(payload);

        // The record declares an empty stream and nothing follows it: well formed but for the length.
        byte[] empty = payload.AsSpan(0, recordAt + VideoChunkFormat.RecordHeaderBytes).ToArray();
        BinaryPrimitives.WriteUInt32LittleEndian(empty.AsSpan(recordAt), 0);

        InvalidKvDataException cpu = Assert.Throws<InvalidKvDataException>(() => codec.Decode(parameters, empty, shape, DType.Float16, 0, 8, new byte[shape.Elements * 2]));
        InvalidKvDataException nvdec = Assert.Throws<InvalidKvDataException>(() => VideoChunkFormat.ReadStreams(empty));

        Assert.Equal(cpu.Message, nvdec.Message);
        Assert.Contains($"{(kind == 0 ? 'K' : 'V')} stream length 0 at offset {recordAt}", cpu.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ReadStreams_StreamLengthBeyondPayload_ThrowsNamingTheStream()
    {
        (_, byte[] payload, _, _) = EncodeChunk(VideoLayoutKind.ChannelRows, 8);
        BinaryPrimitives.WriteUInt32LittleEndian(payload, (uint)payload.Length);

        InvalidKvDataException e = Assert.Throws<InvalidKvDataException>(() => VideoChunkFormat.ReadStreams(payload));

        Assert.Contains("K stream length", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ReadStreams_BytesAfterTheVStream_Throws()
    {
        (_, byte[] payload, _, _) = EncodeChunk(VideoLayoutKind.ChannelRows, 4);

        InvalidKvDataException e = Assert.Throws<InvalidKvDataException>(() => VideoChunkFormat.ReadStreams([.. payload, 0]));

        Assert.Contains("1 bytes after the V stream", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ReadStreams_TruncatedPayload_Throws()
    {
        (_, byte[] payload, _, _) = EncodeChunk(VideoLayoutKind.TokenTiles, 4);

        foreach (int length in new[] { 0, 11, 12, payload.Length - 1 })
        {
            Assert.Throws<InvalidKvDataException>(() => VideoChunkFormat.ReadStreams(payload.AsSpan(0, length)));
        }
    }

    [Fact]
    public void ReadParameters_UnknownVersion_ThrowsNamingTheField()
    {
        (byte[] parameters, _, KvShape shape, _) = EncodeChunk(VideoLayoutKind.TokenTiles, 8);
        parameters[0] = 7;
        int scales = shape.Layers * 2 * shape.Channels;

        InvalidKvDataException e = Assert.Throws<InvalidKvDataException>(() => VideoChunkFormat.ReadParameters(parameters, shape, 8, new float[scales], new float[scales]));

        Assert.Contains("format version at offset 0 is 7", e.Message, StringComparison.Ordinal);
    }

    private static (byte[] Parameters, byte[] Payload, KvShape Shape, VideoCodec Codec) EncodeChunk(VideoLayoutKind layout, int level)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, Tokens, DType.Float16);
        var codec = new VideoCodec(layout);
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        codec.Encode(kv, shape, DType.Float16, 0, level, parameters, payload);
        return (parameters.WrittenSpan.ToArray(), payload.WrittenSpan.ToArray(), shape, codec);
    }
}
