using System.Buffers;
using System.Collections.Concurrent;
using KvFetcher.Codecs.Tests;
using KvFetcher.Codecs.Video;
using KvFetcher.Core;
using KvFetcher.Cuda.Nvdec;
using KvFetcher.Cuda.Reuse;

namespace KvFetcher.Cuda.Tests.Nvdec;

/// <summary>One real-KV stream of the video codec and the planes the CPU decoder (libavcodec) makes of it.</summary>
internal sealed record NvdecTestStream(VideoLayoutKind Layout, int Level, string Kind, NvdecStreamFormat Format, byte[] Data, byte[] CpuPlanes);

/// <summary>
/// Real KV of the bundled model (the reference fixture's longest prompt) encoded by the video codec, and the device the
/// NVDEC tests share: built once per test run.
/// </summary>
internal static class NvdecTestStreams
{
    public const int ChunkTokens = 256;

    private static readonly ConcurrentDictionary<(VideoLayoutKind, int), NvdecTestStream[]> s_streams = new();
    private static readonly Lazy<(bool Available, string Reason)> s_support = new(() => (NvdecDevice.IsSupported(out string reason), reason));
    private static readonly Lazy<NvdecDevice> s_device = new(() => NvdecDevice.Open());

    public static bool Available => s_support.Value.Available;

    public static string Reason => s_support.Value.Reason;

    /// <summary>The device (shared for the test run; not disposed).</summary>
    public static NvdecDevice Device => s_device.Value;

    /// <summary>Both layouts at every level the tests cover (12 and 10 bits are coded in 10/12-bit frames, 8 and 4 in 8-bit).</summary>
    public static (VideoLayoutKind Layout, int Level)[] All { get; } =
        [.. new[] { VideoLayoutKind.TokenTiles, VideoLayoutKind.ChannelRows }.SelectMany(layout => new[] { 12, 10, 8, 4 }.Select(level => (layout, level)))];

    public static TheoryData<VideoLayoutKind, int> Settings => new(All);

    /// <summary>The K and V streams of the first <see cref="ChunkTokens"/> tokens' KV at <paramref name="level"/>.</summary>
    public static NvdecTestStream[] Get(VideoLayoutKind layout, int level) => s_streams.GetOrAdd((layout, level), _ => Encode(layout, level));

    /// <summary>The parameters and payload of the video codec's chunk.</summary>
    public static (byte[] Parameters, byte[] Payload) EncodeChunk(VideoLayoutKind layout, int level)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(0, ChunkTokens, DType.Float16);
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        new VideoCodec(layout).Encode(kv, shape, DType.Float16, 0, level, parameters, payload);
        return (parameters.WrittenSpan.ToArray(), payload.WrittenSpan.ToArray());
    }

    private static NvdecTestStream[] Encode(VideoLayoutKind layout, int level)
    {
        (byte[] parameters, byte[] payload) = EncodeChunk(layout, level);
        (_, KvShape shape) = RealKv.Chunk(0, ChunkTokens, DType.Float16);
        int scales = shape.Layers * 2 * shape.Channels;
        NvdecStreamFormat format = NvdecVideoStreams.FormatOf(VideoChunkFormat.ReadParameters(parameters, shape, level, new float[scales], new float[scales]));
        (VideoStreamRecord k, VideoStreamRecord v) = VideoChunkFormat.ReadStreams(payload);
        return [Stream(k, "K"), Stream(v, "V")];

        NvdecTestStream Stream(VideoStreamRecord record, string kind)
        {
            byte[] data = payload.AsSpan(record.Offset, record.Length).ToArray();
            NvdecStreamFormat f = format;
            var planes = new byte[f.OutputBytes];
            HevcStream.Decode(data, f.Width, f.Height, f.Depth, f.Frames, planes, kind);
            return new NvdecTestStream(layout, level, kind, f, data, planes);
        }
    }
}
