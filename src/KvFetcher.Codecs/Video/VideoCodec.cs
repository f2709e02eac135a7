using System.Buffers;
using System.Numerics;
using System.Runtime.InteropServices;
using KvFetcher.Core;
using KvFetcher.Core.Numerics;

namespace KvFetcher.Codecs.Video;

/// <summary>
/// KVFetcher's codec: per-channel min/max quantization to 12, 10, 8, 6 or 4 bits (the level is the bit count; 8 bits
/// and fewer are coded in 8-bit frames, 10 and 12 in 10- and 12-bit frames), a codec-friendly frame layout
/// (<see cref="VideoLayoutKind"/>; KVFetcher's token tiles by default), and one lossless 4:4:4 HEVC stream each for K and
/// V, encoded with libx265 and decoded with libavcodec on the CPU (NVDEC can decode the same streams: frames are
/// 144x144 to 8192x8192, 4:4:4 at 8/10/12 bits, not monochrome). Needs libkvfvideo.so (<c>native/kvfvideo</c>).
/// </summary>
/// <remarks>
/// The chunk format (parameters header with per (layer, K/V, channel) minima and steps, then a record per stream) is
/// defined, written and read in <see cref="VideoChunkFormat"/>. A value decodes as <c>min + q * step</c>, so the error
/// is at most half a step. Scales are fp16, rounded outwards so the range still covers every value, unless a value is
/// beyond fp16's range; a stream that decodes to frames other than its record's checksum declares is refused.
/// </remarks>
public sealed class VideoCodec : IKvCodec
{
    private const float Fp16Limit = 60000f;

    private readonly VideoLayoutKind _layout;
    private readonly byte[] _preset;

    /// <summary>
    /// Creates the codec with <paramref name="layout"/> and the x265 <paramref name="preset"/> (ultrafast .. placebo).
    /// Coding is lossless at every preset; on the bundled model's KV slower presets were about 1% smaller and 2-3x slower.
    /// </summary>
    public VideoCodec(VideoLayoutKind layout = VideoLayoutKind.TokenTiles, string preset = "ultrafast")
    {
        if (!Enum.IsDefined(layout))
        {
            throw new ArgumentOutOfRangeException(nameof(layout), layout, "Unknown video layout.");
        }

        ArgumentException.ThrowIfNullOrEmpty(preset);
        _layout = layout;
        _preset = [.. System.Text.Encoding.UTF8.GetBytes(preset), 0];
    }

    public static VideoCodec Instance { get; } = new();

    /// <summary>The frame layout this instance encodes with (decoding reads the layout from the parameters).</summary>
    public VideoLayoutKind Layout => _layout;

    public CodecId Id => CodecId.Video;

    public string Name => CodecId.Video.ToName();

    /// <summary>Bits per value: 12, 10, 8 (default), 6 and 4.</summary>
    public IReadOnlyList<int> Levels { get; } = [12, 10, 8, 6, 4];

    public int DefaultLevel => 8;

    /// <summary>Null once libkvfvideo.so is loaded; else why it could not be (what was tried and what to install).</summary>
    public string? Unavailable => Native.KvfVideoLibrary.TryEnsureLoaded(out string? reason) ? null : reason;

    public bool IsLossless(int level) => false;

    /// <summary>
    /// The parameters with fp32 scales, then per stream (K, V) its record header and at most
    /// <see cref="HevcStream.MaxStreamLength"/> (the encoder refuses a longer stream); the largest over every frame layout,
    /// since decoding takes the layout from the parameters.
    /// </summary>
    public long GetMaxEncodedLength(KvShape shape, DType dtype, int level)
    {
        shape.Validate();
        CodecChecks.Level(this, level);
        int depth = FrameDepth(level);
        long stream = 0;
        foreach (VideoLayoutKind kind in Enum.GetValues<VideoLayoutKind>())
        {
            VideoLayout layout = VideoLayout.For(shape, kind);
            stream = Math.Max(stream, HevcStream.MaxStreamLength(layout.Width, layout.Height, depth, layout.FramesPerStream));
        }

        long parameters = VideoChunkFormat.ParameterHeaderBytes + (2L * shape.Layers * 2 * shape.Channels * sizeof(float));
        return parameters + (2 * (HevcStream.RecordHeaderBytes + stream));
    }

    public void Encode(ReadOnlySpan<byte> kv, KvShape shape, DType dtype, long tokenStart, int level, IBufferWriter<byte> parameters, IBufferWriter<byte> payload)
    {
        CodecChecks.Input(kv, shape, dtype);
        CodecChecks.TokenStart(tokenStart);
        CodecChecks.Level(this, level);
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(payload);
        VideoLayout layout = VideoLayout.For(shape, _layout);
        int scales = shape.Layers * 2 * shape.Channels;
        float[] values = ArrayPool<float>.Shared.Rent(checked((int)shape.Elements));
        float[] mins = ArrayPool<float>.Shared.Rent(scales);
        float[] steps = ArrayPool<float>.Shared.Rent(scales);
        int depth = FrameDepth(level);
        int frameBytes = layout.StreamSamples * HevcStream.SampleBytes(depth);
        byte[] planes = ArrayPool<byte>.Shared.Rent(frameBytes);
        int[] offsets = ArrayPool<int>.Shared.Rent(shape.Tokens + shape.Channels);
        try
        {
            Span<float> all = values.AsSpan(0, (int)shape.Elements);
            FloatConversions.ToSingle(dtype, kv, all);
            bool fp16 = ComputeScales(all, shape, (1 << level) - 1, mins.AsSpan(0, scales), steps.AsSpan(0, scales));
            VideoChunkFormat.WriteParameters(parameters, layout, level, fp16, mins.AsSpan(0, scales), steps.AsSpan(0, scales));
            Span<byte> frames = planes.AsSpan(0, frameBytes);
            for (int kind = 0; kind < 2; kind++)
            {
                Quantize(all, shape, layout, kind, level, mins, steps, offsets, frames);
                HevcStream.Encode(frames, layout.Width, layout.Height, depth, layout.FramesPerStream, _preset, 0, payload);
            }
        }
        finally
        {
            ArrayPool<int>.Shared.Return(offsets);
            ArrayPool<byte>.Shared.Return(planes);
            ArrayPool<float>.Shared.Return(steps);
            ArrayPool<float>.Shared.Return(mins);
            ArrayPool<float>.Shared.Return(values);
        }
    }

    public void Decode(ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, KvShape shape, DType dtype, long tokenStart, int level, Span<byte> destination)
    {
        CodecChecks.Output(destination, shape, dtype);
        CodecChecks.TokenStart(tokenStart);
        CodecChecks.Level(this, level);

        // The layout is read from the parameters, so any instance decodes a chunk of any layout.
        VideoLayout layout = VideoLayout.For(shape, VideoChunkFormat.ReadLayoutKind(parameters));
        int scales = shape.Layers * 2 * shape.Channels;
        float[] mins = ArrayPool<float>.Shared.Rent(scales);
        float[] steps = ArrayPool<float>.Shared.Rent(scales);
        int depth = FrameDepth(level);
        int frameBytes = layout.StreamSamples * HevcStream.SampleBytes(depth);
        byte[] planes = ArrayPool<byte>.Shared.Rent(frameBytes);
        int[] offsets = ArrayPool<int>.Shared.Rent(shape.Tokens + shape.Channels);
        float[] slab = ArrayPool<float>.Shared.Rent(shape.Tokens * shape.Channels);
        try
        {
            _ = VideoChunkFormat.ReadParameters(parameters, shape, level, mins.AsSpan(0, scales), steps.AsSpan(0, scales));
            Span<byte> frames = planes.AsSpan(0, frameBytes);
            int position = 0;
            for (int kind = 0; kind < 2; kind++)
            {
                position = DecodeRecord(payload, position, layout, depth, kind, frames);
                Dequantize(frames, shape, layout, depth, kind, dtype, mins, steps, offsets, slab, destination);
            }

            VideoChunkFormat.CheckEnd(payload, position);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(slab);
            ArrayPool<int>.Shared.Return(offsets);
            ArrayPool<byte>.Shared.Return(planes);
            ArrayPool<float>.Shared.Return(steps);
            ArrayPool<float>.Shared.Return(mins);
        }
    }

    /// <summary>The quantized frames of one stream (kind 0 = K, 1 = V) that <see cref="Encode"/> hands to the encoder.</summary>
    internal byte[] QuantizedFrames(ReadOnlySpan<byte> kv, KvShape shape, DType dtype, int level, int kind)
    {
        CodecChecks.Input(kv, shape, dtype);
        VideoLayout layout = VideoLayout.For(shape, _layout);
        int scales = shape.Layers * 2 * shape.Channels;
        var all = new float[shape.Elements];
        FloatConversions.ToSingle(dtype, kv, all);
        var mins = new float[scales];
        var steps = new float[scales];
        ComputeScales(all, shape, (1 << level) - 1, mins, steps);
        var frames = new byte[layout.StreamSamples * HevcStream.SampleBytes(FrameDepth(level))];
        Quantize(all, shape, layout, kind, level, mins, steps, new int[shape.Tokens + shape.Channels], frames);
        return frames;
    }

    /// <summary>The frames one stream of an encoded chunk decodes to, checked like <see cref="Decode"/> checks them.</summary>
    internal byte[] DecodedFrames(ReadOnlySpan<byte> payload, KvShape shape, int level, int kind)
    {
        VideoLayout layout = VideoLayout.For(shape, _layout);
        int depth = FrameDepth(level);
        var frames = new byte[layout.StreamSamples * HevcStream.SampleBytes(depth)];
        int position = 0;
        for (int k = 0; k <= kind; k++)
        {
            position = DecodeRecord(payload, position, layout, depth, k, frames);
        }

        return frames;
    }

    /// <summary>
    /// For a decoder outside this codec (NVDEC with a restore kernel): checks a chunk's parameters as
    /// <see cref="Decode"/> does (<see cref="VideoChunkFormat.ReadParameters"/>), writes the per (layer, K/V, channel) minima and steps (<c>layers * 2 * channels</c>
    /// each; a value is <c>min + q * step</c> in fp32) and returns the chunk's frame layout.
    /// </summary>
    /// <exception cref="InvalidKvDataException">The parameters are malformed or do not match <paramref name="shape"/> and <paramref name="level"/>.</exception>
    public static VideoLayoutKind ReadScales(ReadOnlySpan<byte> parameters, KvShape shape, int level, Span<float> mins, Span<float> steps) =>
        VideoChunkFormat.ReadParameters(parameters, shape, level, mins, steps).Layout;

    /// <summary>
    /// Where a chunk's quantized values sit in a stream's decoded frames (all planes, samples of 1 or 2 bytes): value
    /// (layer, token, channel) is sample <c>layerOffsets[layer] + tokenOffsets[token] + channelOffsets[channel]</c>.
    /// </summary>
    public static void FrameOffsets(KvShape shape, VideoLayoutKind kind, Span<int> tokenOffsets, Span<int> channelOffsets, Span<int> layerOffsets)
    {
        VideoLayout layout = VideoLayout.For(shape, kind);
        layout.TokenOffsets(tokenOffsets[..shape.Tokens]);
        layout.ChannelOffsets(channelOffsets[..shape.Channels]);
        for (int layer = 0; layer < shape.Layers; layer++)
        {
            layerOffsets[layer] = layout.LayerOffset(layer);
        }
    }

    /// <summary>The checksum a stream record declares for its decoded frames (little-endian samples).</summary>
    public static ulong FramesChecksum(ReadOnlySpan<byte> frames) => HevcStream.Checksum(frames);

    /// <summary>The frame geometry this codec uses for <paramref name="shape"/>: width, height and frames per stream.</summary>
    internal (int Width, int Height, int Frames) Geometry(KvShape shape)
    {
        VideoLayout layout = VideoLayout.For(shape, _layout);
        return (layout.Width, layout.Height, layout.FramesPerStream);
    }

    /// <summary>
    /// Per (layer, kind, channel): the minimum and step of <paramref name="levels"/> + 1 evenly spaced values covering
    /// the channel's range; rounded outwards to fp16 values where every value fits fp16 (returns true), else fp32.
    /// </summary>
    private static bool ComputeScales(ReadOnlySpan<float> values, KvShape shape, int levels, Span<float> mins, Span<float> maxs)
    {
        int tokens = shape.Tokens;
        int channels = shape.Channels;
        mins.Fill(float.PositiveInfinity);
        maxs.Fill(float.NegativeInfinity);
        bool fp16 = true;
        for (int s = 0; s < shape.Layers * 2; s++)
        {
            Span<float> min = mins.Slice(s * channels, channels);
            Span<float> max = maxs.Slice(s * channels, channels);
            for (int t = 0; t < tokens; t++)
            {
                ReadOnlySpan<float> row = values.Slice(((s * tokens) + t) * channels, channels);
                for (int c = 0; c < row.Length; c++)
                {
                    float v = row[c];
                    if (!float.IsFinite(v))
                    {
                        throw new ArgumentException($"video: KV value {v} at layer {s / 2}, {(s % 2 == 0 ? "K" : "V")}, token {t}, channel {c} is not finite.", nameof(values));
                    }

                    min[c] = Math.Min(min[c], v);
                    max[c] = Math.Max(max[c], v);
                }
            }

            for (int c = 0; c < channels; c++)
            {
                fp16 &= Math.Abs(min[c]) <= Fp16Limit && Math.Abs(max[c]) <= Fp16Limit;
            }
        }

        // maxs now holds the maxima; turn (min, max) into the stored (min, step).
        for (int i = 0; i < mins.Length; i++)
        {
            (mins[i], maxs[i]) = fp16 ? ScaleFp16(mins[i], maxs[i], levels) : ScaleFp32(mins[i], maxs[i], levels);
        }

        return fp16;
    }

    private static (float Min, float Step) ScaleFp16(float min, float max, int levels)
    {
        var low = (Half)min;
        if ((float)low > min)
        {
            low = Half.BitDecrement(low);
        }

        float step = (max - (float)low) / levels;
        var stored = (Half)step;
        while ((float)stored < step || (float)low + (levels * (float)stored) < max)
        {
            stored = Half.BitIncrement(stored);
        }

        return ((float)low, (float)stored);
    }

    private static (float Min, float Step) ScaleFp32(float min, float max, int levels)
    {
        float step = (max - min) / levels;
        while (min + (levels * step) < max)
        {
            step = MathF.BitIncrement(step);
        }

        return (min, step);
    }

    /// <summary>The sample depth of the frames a level is coded in (<see cref="VideoChunkFormat.FrameDepth"/>).</summary>
    internal static int FrameDepth(int bits) => VideoChunkFormat.FrameDepth(bits);

    private static void Quantize(ReadOnlySpan<float> values, KvShape shape, VideoLayout layout, int kind, int bits, ReadOnlySpan<float> mins, ReadOnlySpan<float> steps, Span<int> offsets, Span<byte> frames)
    {
        if (FrameDepth(bits) == 8)
        {
            Quantize<byte>(values, shape, layout, kind, (1 << bits) - 1, mins, steps, offsets, frames);
        }
        else
        {
            Quantize(values, shape, layout, kind, (1 << bits) - 1, mins, steps, offsets, MemoryMarshal.Cast<byte, ushort>(frames));
        }
    }

    private static void Quantize<T>(ReadOnlySpan<float> values, KvShape shape, VideoLayout layout, int kind, int levels, ReadOnlySpan<float> mins, ReadOnlySpan<float> steps, Span<int> offsets, Span<T> frames)
        where T : unmanaged, IBinaryInteger<T>
    {
        int tokens = shape.Tokens;
        int channels = shape.Channels;
        Span<int> tokenOffsets = offsets[..tokens];
        Span<int> channelOffsets = offsets.Slice(tokens, channels);
        layout.TokenOffsets(tokenOffsets);
        layout.ChannelOffsets(channelOffsets);
        frames.Clear();
        for (int layer = 0; layer < shape.Layers; layer++)
        {
            int s = (layer * 2) + kind;
            ReadOnlySpan<float> min = mins.Slice(s * channels, channels);
            ReadOnlySpan<float> step = steps.Slice(s * channels, channels);
            Span<T> plane = frames[layout.LayerOffset(layer)..];
            for (int t = 0; t < tokens; t++)
            {
                ReadOnlySpan<float> row = values.Slice(((s * tokens) + t) * channels, channels);
                Span<T> tile = plane[tokenOffsets[t]..];
                for (int c = 0; c < row.Length; c++)
                {
                    int q = step[c] > 0 ? (int)MathF.Round((row[c] - min[c]) / step[c]) : 0;
                    tile[channelOffsets[c]] = T.CreateTruncating(Math.Clamp(q, 0, levels));
                }
            }
        }
    }

    private static void Dequantize(ReadOnlySpan<byte> frames, KvShape shape, VideoLayout layout, int depth, int kind, DType dtype, ReadOnlySpan<float> mins, ReadOnlySpan<float> steps, Span<int> offsets, Span<float> slab, Span<byte> destination)
    {
        if (depth == 8)
        {
            Dequantize<byte>(frames, shape, layout, kind, dtype, mins, steps, offsets, slab, destination);
        }
        else
        {
            Dequantize(MemoryMarshal.Cast<byte, ushort>(frames), shape, layout, kind, dtype, mins, steps, offsets, slab, destination);
        }
    }

    private static void Dequantize<T>(ReadOnlySpan<T> frames, KvShape shape, VideoLayout layout, int kind, DType dtype, ReadOnlySpan<float> mins, ReadOnlySpan<float> steps, Span<int> offsets, Span<float> slab, Span<byte> destination)
        where T : unmanaged, IBinaryInteger<T>
    {
        int tokens = shape.Tokens;
        int channels = shape.Channels;
        int size = dtype.SizeOf();
        Span<int> tokenOffsets = offsets[..tokens];
        Span<int> channelOffsets = offsets.Slice(tokens, channels);
        layout.TokenOffsets(tokenOffsets);
        layout.ChannelOffsets(channelOffsets);
        Span<float> values = slab[..(tokens * channels)];
        for (int layer = 0; layer < shape.Layers; layer++)
        {
            int s = (layer * 2) + kind;
            ReadOnlySpan<float> min = mins.Slice(s * channels, channels);
            ReadOnlySpan<float> step = steps.Slice(s * channels, channels);
            ReadOnlySpan<T> plane = frames[layout.LayerOffset(layer)..];
            for (int t = 0; t < tokens; t++)
            {
                Span<float> row = values.Slice(t * channels, channels);
                ReadOnlySpan<T> tile = plane[tokenOffsets[t]..];
                for (int c = 0; c < row.Length; c++)
                {
                    row[c] = min[c] + (int.CreateTruncating(tile[channelOffsets[c]]) * step[c]);
                }
            }

            FloatConversions.FromSingle(dtype, values, destination.Slice(s * tokens * channels * size, tokens * channels * size));
        }
    }

    /// <summary>Decodes the stream record at <paramref name="position"/> into <paramref name="frames"/>; returns the next record's offset.</summary>
    private static int DecodeRecord(ReadOnlySpan<byte> payload, int position, VideoLayout layout, int depth, int kind, Span<byte> frames)
    {
        string what = kind == 0 ? "K" : "V";
        VideoStreamRecord record = VideoChunkFormat.ReadStream(payload, position, kind);
        HevcStream.Decode(payload.Slice(record.Offset, record.Length), layout.Width, layout.Height, depth, layout.FramesPerStream, frames, what);
        ulong actual = HevcStream.Checksum(frames);
        if (actual != record.Checksum)
        {
            throw new InvalidKvDataException($"video: the {what} stream decodes to frames with checksum {actual:x16}; the record at offset {position} declares {record.Checksum:x16}.");
        }

        return record.End;
    }
}
