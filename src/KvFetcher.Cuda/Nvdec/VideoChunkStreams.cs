using System.Buffers.Binary;
using KvFetcher.Core;

namespace KvFetcher.Cuda.Nvdec;

/// <summary>One HEVC stream of a <c>video</c> chunk: its format, where it lies in the payload and the checksum of its planes.</summary>
/// <param name="Format">The frames the stream decodes to.</param>
/// <param name="Offset">The stream's first byte in the payload.</param>
/// <param name="Length">The stream's length in bytes.</param>
/// <param name="Checksum">XxHash3-64 of the decoded planes (little-endian samples), as the payload record declares it.</param>
public readonly record struct VideoStreamRecord(NvdecStreamFormat Format, int Offset, int Length, ulong Checksum);

/// <summary>
/// Reads the K and V streams out of a <c>video</c> codec chunk (the parameters header and the payload records that
/// <c>KvFetcher.Codecs.Video.VideoCodec</c> writes) so NVDEC can decode them.
/// </summary>
public static class VideoChunkStreams
{
    private const int ParameterHeaderBytes = 16;
    private const int RecordHeaderBytes = 12;
    private const byte FormatVersion = 1;

    /// <summary>The K (first) and V (second) streams; throws <see cref="InvalidKvDataException"/> naming the bad field.</summary>
    public static (VideoStreamRecord K, VideoStreamRecord V) Parse(ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload)
    {
        if (parameters.Length < ParameterHeaderBytes)
        {
            throw new InvalidKvDataException($"video: parameters hold {parameters.Length} bytes, fewer than the {ParameterHeaderBytes}-byte header.");
        }

        if (parameters[0] != FormatVersion)
        {
            throw new InvalidKvDataException($"video: parameters field format version at offset 0 is {parameters[0]}; expected {FormatVersion}.");
        }

        int bits = parameters[1];
        if (bits is not (4 or 6 or 8 or 10 or 12))
        {
            throw new InvalidKvDataException($"video: parameters field bits at offset 1 is {bits}; expected 4, 6, 8, 10 or 12.");
        }

        var format = new NvdecStreamFormat(
            BinaryPrimitives.ReadUInt16LittleEndian(parameters[4..]),
            BinaryPrimitives.ReadUInt16LittleEndian(parameters[6..]),
            bits <= 8 ? 8 : bits,
            BinaryPrimitives.ReadInt32LittleEndian(parameters[8..]));
        try
        {
            format.Validate();
        }
        catch (ArgumentOutOfRangeException ex)
        {
            throw new InvalidKvDataException($"video: parameters declare frames NVDEC cannot decode ({format}): {ex.Message}", ex);
        }

        VideoStreamRecord k = ReadRecord(payload, 0, format, "K");
        VideoStreamRecord v = ReadRecord(payload, k.Offset + k.Length, format, "V");
        int end = v.Offset + v.Length;
        if (end != payload.Length)
        {
            throw new InvalidKvDataException($"video: payload has {payload.Length - end} bytes after the V stream at offset {end}.");
        }

        return (k, v);
    }

    private static VideoStreamRecord ReadRecord(ReadOnlySpan<byte> payload, int position, NvdecStreamFormat format, string what)
    {
        if (payload.Length - position < RecordHeaderBytes)
        {
            throw new InvalidKvDataException($"video: payload of {payload.Length} bytes ends inside the {what} stream's header at offset {position}.");
        }

        uint length = BinaryPrimitives.ReadUInt32LittleEndian(payload[position..]);
        ulong checksum = BinaryPrimitives.ReadUInt64LittleEndian(payload[(position + 4)..]);
        int start = position + RecordHeaderBytes;
        if (length == 0 || length > (uint)(payload.Length - start))
        {
            throw new InvalidKvDataException($"video: {what} stream length {length} at offset {position} is empty or exceeds the {payload.Length - start} bytes left in the payload.");
        }

        return new VideoStreamRecord(format, start, (int)length, checksum);
    }
}
