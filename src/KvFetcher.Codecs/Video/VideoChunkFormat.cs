using System.Buffers;
using System.Buffers.Binary;
using KvFetcher.Core;

namespace KvFetcher.Codecs.Video;

/// <summary>What a <c>video</c> chunk's parameters header declares about its two streams' frames.</summary>
/// <param name="Layout">The frame layout the chunk was encoded with.</param>
/// <param name="Bits">Bits per quantized value (the quality level).</param>
/// <param name="Width">Frame width in samples.</param>
/// <param name="Height">Frame height in samples.</param>
/// <param name="FramesPerStream">Frames in each of the K and V streams.</param>
public readonly record struct VideoChunkHeader(VideoLayoutKind Layout, int Bits, int Width, int Height, int FramesPerStream)
{
    /// <summary>The sample depth the frames are coded in: 8 bits up to 8-bit levels, else the level's bits.</summary>
    public int FrameDepth => VideoChunkFormat.FrameDepth(Bits);
}

/// <summary>One stream record of a <c>video</c> chunk's payload.</summary>
/// <param name="Offset">The stream's first byte in the payload (after its record header).</param>
/// <param name="Length">The stream's length in bytes (never 0).</param>
/// <param name="Checksum">XxHash3-64 of the decoded planes (little-endian samples), as the record declares it.</param>
public readonly record struct VideoStreamRecord(int Offset, int Length, ulong Checksum)
{
    /// <summary>The payload offset after the stream: the next record's header.</summary>
    public int End => Offset + Length;
}

/// <summary>
/// The <c>video</c> chunk format, written and read here only: every decoder (the CPU codec, NVDEC with a restore
/// kernel) reads a chunk through these methods, so they accept and refuse the same bytes with the same words.
/// </summary>
/// <remarks>
/// Parameters (little-endian): format version (1), bits, scale type (0 = fp16, 1 = fp32), layout id, frame width
/// (u16), frame height (u16), frames per stream (i32), tile width (u16), tile height (u16); then per
/// (layer, K/V, channel) the minimum, then per (layer, K/V, channel) the step, in the scale type. Payload: a record per
/// stream (K, then V) of its length (u32, at least 1), the XxHash3 of its frames' planes (u64), and the Annex B HEVC
/// stream; nothing after the V stream.
/// </remarks>
public static class VideoChunkFormat
{
    /// <summary>Bytes of the parameters header before the scales.</summary>
    public const int ParameterHeaderBytes = 16;

    /// <summary>Bytes before each stream in the payload: its length (u32) and the checksum of its planes (u64).</summary>
    public const int RecordHeaderBytes = 12;

    /// <summary>The format version this build writes and reads.</summary>
    public const byte FormatVersion = 1;

    private const byte ScalesFp16 = 0;
    private const byte ScalesFp32 = 1;

    /// <summary>
    /// Checks a chunk's parameters against the layout that <paramref name="shape"/> and <paramref name="level"/> imply
    /// (version, bits, scale type, layout, frame geometry, length), writes the per (layer, K/V, channel) minima and
    /// steps (<c>layers * 2 * channels</c> each; a value is <c>min + q * step</c> in fp32) and returns the header.
    /// </summary>
    /// <exception cref="InvalidKvDataException">The parameters are malformed or do not match; the message names the field and offset.</exception>
    public static VideoChunkHeader ReadParameters(ReadOnlySpan<byte> parameters, KvShape shape, int level, Span<float> mins, Span<float> steps)
    {
        int scales = shape.Layers * 2 * shape.Channels;
        if (mins.Length != scales || steps.Length != scales)
        {
            throw new ArgumentException($"video: {shape} has {scales} scales; the spans hold {mins.Length} and {steps.Length}.", nameof(mins));
        }

        VideoLayout layout = VideoLayout.For(shape, ReadLayoutKind(parameters));
        Expect(parameters[0], FormatVersion, "format version", 0);
        Expect(parameters[1], level, "bits (quality level)", 1);
        if (parameters[2] is not (ScalesFp16 or ScalesFp32))
        {
            throw new InvalidKvDataException($"video: parameters field scale type at offset 2 is {parameters[2]}; expected 0 (fp16) or 1 (fp32).");
        }

        Expect(parameters[3], (byte)layout.Kind, "layout id", 3);
        Expect(BinaryPrimitives.ReadUInt16LittleEndian(parameters[4..]), layout.Width, "frame width", 4);
        Expect(BinaryPrimitives.ReadUInt16LittleEndian(parameters[6..]), layout.Height, "frame height", 6);
        Expect(BinaryPrimitives.ReadInt32LittleEndian(parameters[8..]), layout.FramesPerStream, "frames per stream", 8);
        Expect(BinaryPrimitives.ReadUInt16LittleEndian(parameters[12..]), layout.TileWidth, "tile width", 12);
        Expect(BinaryPrimitives.ReadUInt16LittleEndian(parameters[14..]), layout.TileHeight, "tile height", 14);
        bool fp16 = parameters[2] == ScalesFp16;
        int scaleBytes = fp16 ? 2 : 4;
        long expected = ParameterHeaderBytes + (2L * mins.Length * scaleBytes);
        if (parameters.Length != expected)
        {
            throw new InvalidKvDataException($"video: parameters hold {parameters.Length} bytes; {mins.Length} {(fp16 ? "fp16" : "fp32")} minima and steps need {expected}.");
        }

        ReadOnlySpan<byte> body = parameters[ParameterHeaderBytes..];
        for (int i = 0; i < mins.Length; i++)
        {
            int minOffset = scaleBytes * i;
            int stepOffset = scaleBytes * (mins.Length + i);
            mins[i] = fp16 ? (float)BinaryPrimitives.ReadHalfLittleEndian(body[minOffset..]) : BinaryPrimitives.ReadSingleLittleEndian(body[minOffset..]);
            steps[i] = fp16 ? (float)BinaryPrimitives.ReadHalfLittleEndian(body[stepOffset..]) : BinaryPrimitives.ReadSingleLittleEndian(body[stepOffset..]);
            if (!float.IsFinite(mins[i]))
            {
                throw new InvalidKvDataException($"video: parameters minimum {i} at offset {ParameterHeaderBytes + minOffset} is {mins[i]}.");
            }

            if (!float.IsFinite(steps[i]) || steps[i] < 0)
            {
                throw new InvalidKvDataException($"video: parameters step {i} at offset {ParameterHeaderBytes + stepOffset} is {steps[i]}.");
            }
        }

        return new VideoChunkHeader(layout.Kind, level, layout.Width, layout.Height, layout.FramesPerStream);
    }

    /// <summary>
    /// Reads the stream record at <paramref name="position"/> of <paramref name="payload"/> (kind 0 = K, 1 = V): the
    /// stream must be non-empty and lie inside the payload.
    /// </summary>
    /// <exception cref="InvalidKvDataException">The record is cut off, empty or longer than the payload; the message names the stream and offset.</exception>
    public static VideoStreamRecord ReadStream(ReadOnlySpan<byte> payload, int position, int kind)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(position);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(position, payload.Length);
        string what = kind == 0 ? "K" : "V";
        if (payload.Length - position < RecordHeaderBytes)
        {
            throw new InvalidKvDataException($"video: payload of {payload.Length} bytes ends inside the {what} stream's header at offset {position}.");
        }

        uint length = BinaryPrimitives.ReadUInt32LittleEndian(payload[position..]);
        ulong checksum = BinaryPrimitives.ReadUInt64LittleEndian(payload[(position + 4)..]);
        int start = position + RecordHeaderBytes;
        if (length == 0)
        {
            throw new InvalidKvDataException($"video: {what} stream length 0 at offset {position}: a stream holds at least one frame.");
        }

        if (length > (uint)(payload.Length - start))
        {
            throw new InvalidKvDataException($"video: {what} stream length {length} at offset {position} exceeds the {payload.Length - start} bytes left in the payload.");
        }

        return new VideoStreamRecord(start, (int)length, checksum);
    }

    /// <summary>Throws unless the V stream, ending at <paramref name="end"/>, is the last thing in <paramref name="payload"/>.</summary>
    public static void CheckEnd(ReadOnlySpan<byte> payload, int end)
    {
        if (end != payload.Length)
        {
            throw new InvalidKvDataException($"video: payload has {payload.Length - end} bytes after the V stream at offset {end}.");
        }
    }

    /// <summary>Both stream records, K then V, and nothing after them (for a decoder that starts both streams at once).</summary>
    /// <exception cref="InvalidKvDataException">A record is cut off, empty or too long, or bytes follow the V stream.</exception>
    public static (VideoStreamRecord K, VideoStreamRecord V) ReadStreams(ReadOnlySpan<byte> payload)
    {
        VideoStreamRecord k = ReadStream(payload, 0, 0);
        VideoStreamRecord v = ReadStream(payload, k.End, 1);
        CheckEnd(payload, v.End);
        return (k, v);
    }

    /// <summary>The sample depth of the frames a level is coded in: 8 bits up to 8-bit levels, else the level's bits.</summary>
    public static int FrameDepth(int bits) => bits <= 8 ? 8 : bits;

    /// <summary>The layout id of a chunk's parameters (any instance of the codec decodes a chunk of any layout).</summary>
    internal static VideoLayoutKind ReadLayoutKind(ReadOnlySpan<byte> parameters)
    {
        if (parameters.Length < ParameterHeaderBytes)
        {
            throw new InvalidKvDataException($"video: parameters hold {parameters.Length} bytes, fewer than the {ParameterHeaderBytes}-byte header.");
        }

        var kind = (VideoLayoutKind)parameters[3];
        return Enum.IsDefined(kind)
            ? kind
            : throw new InvalidKvDataException($"video: parameters field layout id at offset 3 is {parameters[3]}; expected {(byte)VideoLayoutKind.TokenTiles} or {(byte)VideoLayoutKind.ChannelRows}.");
    }

    internal static void WriteParameters(IBufferWriter<byte> parameters, VideoLayout layout, int bits, bool fp16, ReadOnlySpan<float> mins, ReadOnlySpan<float> steps)
    {
        int scaleBytes = fp16 ? 2 : 4;
        int length = ParameterHeaderBytes + (2 * mins.Length * scaleBytes);
        Span<byte> span = parameters.GetSpan(length)[..length];
        span[0] = FormatVersion;
        span[1] = (byte)bits;
        span[2] = fp16 ? ScalesFp16 : ScalesFp32;
        span[3] = (byte)layout.Kind;
        BinaryPrimitives.WriteUInt16LittleEndian(span[4..], (ushort)layout.Width);
        BinaryPrimitives.WriteUInt16LittleEndian(span[6..], (ushort)layout.Height);
        BinaryPrimitives.WriteInt32LittleEndian(span[8..], layout.FramesPerStream);
        BinaryPrimitives.WriteUInt16LittleEndian(span[12..], (ushort)layout.TileWidth);
        BinaryPrimitives.WriteUInt16LittleEndian(span[14..], (ushort)layout.TileHeight);
        Span<byte> body = span[ParameterHeaderBytes..];
        for (int i = 0; i < mins.Length; i++)
        {
            if (fp16)
            {
                BinaryPrimitives.WriteHalfLittleEndian(body[(2 * i)..], (Half)mins[i]);
                BinaryPrimitives.WriteHalfLittleEndian(body[(2 * (mins.Length + i))..], (Half)steps[i]);
            }
            else
            {
                BinaryPrimitives.WriteSingleLittleEndian(body[(4 * i)..], mins[i]);
                BinaryPrimitives.WriteSingleLittleEndian(body[(4 * (mins.Length + i))..], steps[i]);
            }
        }

        parameters.Advance(length);
    }

    private static void Expect(long value, long expected, string field, int offset)
    {
        if (value != expected)
        {
            throw new InvalidKvDataException($"video: parameters field {field} at offset {offset} is {value}; expected {expected}.");
        }
    }
}
