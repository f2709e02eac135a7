using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using KvFetcher.Codecs.Video.Native;
using KvFetcher.Core;

namespace KvFetcher.Codecs.Video;

/// <summary>
/// Lossless 4:4:4 HEVC streams of 8, 10 or 12 bits through libkvfvideo: frames are three width x height planes (Y, U,
/// V), stored one after another (frame f, plane p at <c>(f * 3 + p) * width * height</c> samples); a sample is one byte
/// at 8 bits and a little-endian uint16 at 10 and 12.
/// </summary>
internal static unsafe class HevcStream
{
    /// <summary>The smallest frame side NVDEC decodes in 4:4:4.</summary>
    public const int MinSide = 144;

    /// <summary>The largest frame side this codec writes (within NVDEC's HEVC limit).</summary>
    public const int MaxSide = 8192;

    /// <summary>The bytes before each stream in a payload: its length (u32) and the checksum of its planes (u64).</summary>
    public const int RecordHeaderBytes = VideoChunkFormat.RecordHeaderBytes;

    /// <summary>
    /// The most bytes the Annex B stream of <paramref name="frames"/> frames of <paramref name="width"/> x
    /// <paramref name="height"/> 4:4:4 samples at <paramref name="depth"/> bits may take: twice the raw samples (lossless
    /// CABAC codes even noise in well under twice its bits) plus 4 KiB per frame for slice headers and 64 KiB for
    /// parameter sets. <see cref="Encode"/> refuses a longer stream, so a reader can size its buffers from the shape.
    /// </summary>
    public static long MaxStreamLength(int width, int height, int depth, int frames) =>
        (2L * frames * 3 * width * height * SampleBytes(depth)) + (4096L * frames) + 65536;

    /// <summary>
    /// Encodes <paramref name="frames"/> frames from <paramref name="planes"/> with the x265 preset
    /// <paramref name="presetUtf8Z"/> (NUL-terminated) and appends a record to <paramref name="output"/>: the stream's
    /// length (u32 LE), the planes' checksum (u64 LE, <see cref="Checksum"/>), then the Annex B stream.
    /// </summary>
    /// <returns>The stream's length in bytes.</returns>
    public static int Encode(ReadOnlySpan<byte> planes, int width, int height, int depth, int frames, ReadOnlySpan<byte> presetUtf8Z, int threads, IBufferWriter<byte> output)
    {
        CheckGeometry(planes.Length, width, height, depth, frames);
        KvfVideoLibrary.EnsureLoaded();
        int sample = SampleBytes(depth);
        int planeBytes = width * height * sample;
        int frameBytes = planeBytes * 3;
        fixed (byte* preset = presetUtf8Z)
        fixed (byte* source = planes)
        {
            int status = Interop.KvfVideo.EncoderCreate(width, height, depth, frames, preset, threads, out KvfEncoderHandle encoder);
            using (encoder)
            {
                Check(status, encoder, "kvf_encoder_create");
                for (int f = 0; f < frames; f++)
                {
                    byte* y = source + ((long)f * frameBytes);
                    Check(Interop.KvfVideo.EncoderEncode(encoder, y, y + planeBytes, y + (2 * planeBytes), width * sample), encoder);
                }

                Check(Interop.KvfVideo.EncoderFinish(encoder, out byte* data, out nuint size), encoder);
                long maxLength = Math.Min(MaxStreamLength(width, height, depth, frames), int.MaxValue);
                if (size > (ulong)maxLength)
                {
                    throw new InvalidOperationException($"kvfvideo: the HEVC stream of {frames} frames of {width}x{height} at {depth} bits is {size} bytes, more than the {maxLength} a reader is promised.");
                }

                var stream = new ReadOnlySpan<byte>(data, (int)size);
                Span<byte> header = output.GetSpan(RecordHeaderBytes);
                BinaryPrimitives.WriteUInt32LittleEndian(header, (uint)stream.Length);
                BinaryPrimitives.WriteUInt64LittleEndian(header[4..], Checksum(planes));
                output.Advance(RecordHeaderBytes);
                output.Write(stream);
                return stream.Length;
            }
        }
    }

    /// <summary>
    /// Decodes one stream into <paramref name="planes"/> and checks that it held exactly <paramref name="frames"/>
    /// frames of the declared size; <paramref name="what"/> names the stream in error messages.
    /// </summary>
    public static void Decode(ReadOnlySpan<byte> stream, int width, int height, int depth, int frames, Span<byte> planes, string what)
    {
        CheckGeometry(planes.Length, width, height, depth, frames);
        if (stream.IsEmpty)
        {
            throw new InvalidKvDataException($"video: the {what} HEVC stream is empty.");
        }

        KvfVideoLibrary.EnsureLoaded();
        fixed (byte* source = stream)
        fixed (byte* destination = planes)
        {
            int status = Interop.KvfVideo.DecoderCreate(width, height, depth, out KvfDecoderHandle decoder);
            using (decoder)
            {
                if (status != Interop.KvfVideo.Ok)
                {
                    throw new InvalidOperationException($"kvfvideo: kvf_decoder_create failed: {Interop.KvfVideo.StatusName(status)}: {ErrorText(decoder)}");
                }

                status = Interop.KvfVideo.DecoderDecode(decoder, source, (nuint)stream.Length, destination, (nuint)planes.Length, frames, out int decoded);
                if (status != Interop.KvfVideo.Ok)
                {
                    throw new InvalidKvDataException(
                        $"video: the {what} HEVC stream ({stream.Length} bytes) does not decode: {Interop.KvfVideo.StatusName(status)}: {ErrorText(decoder)}.");
                }

                if (decoded != frames)
                {
                    throw new InvalidKvDataException($"video: the {what} HEVC stream ({stream.Length} bytes) holds {decoded} frames; the parameters declare {frames}.");
                }
            }
        }
    }

    /// <summary>The checksum a payload record carries for its planes: catches streams that decode to other values.</summary>
    public static ulong Checksum(ReadOnlySpan<byte> planes) => XxHash3.HashToUInt64(planes);

    /// <summary>Bytes per sample at <paramref name="depth"/> bits: 1 at 8, 2 at 10 and 12.</summary>
    public static int SampleBytes(int depth) => depth switch
    {
        8 => 1,
        10 or 12 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(depth), depth, "HEVC streams here are 8, 10 or 12 bits."),
    };

    private static void CheckGeometry(int planeBytes, int width, int height, int depth, int frames)
    {
        int sample = SampleBytes(depth);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, MinSide);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, MinSide);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(width, MaxSide);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(height, MaxSide);
        ArgumentOutOfRangeException.ThrowIfLessThan(frames, 1);
        long expected = (long)width * height * 3 * frames * sample;
        if (expected != planeBytes)
        {
            throw new ArgumentException($"{frames} frames of {width}x{height}x3 {depth}-bit samples are {expected} bytes, not {planeBytes}.", nameof(planeBytes));
        }
    }

    /// <summary>Throws unless <paramref name="status"/> is ok, naming the failing call and the encoder's own description.</summary>
    private static void Check(int status, KvfEncoderHandle encoder, [CallerArgumentExpression(nameof(status))] string call = "")
    {
        if (status != Interop.KvfVideo.Ok)
        {
            string detail = encoder.IsInvalid ? "" : Marshal.PtrToStringUTF8((IntPtr)Interop.KvfVideo.EncoderError(encoder)) ?? "";
            throw new InvalidOperationException($"kvfvideo: {call} failed: {Interop.KvfVideo.StatusName(status)}: {detail}");
        }
    }

    private static string ErrorText(KvfDecoderHandle decoder) =>
        decoder.IsInvalid ? "" : Marshal.PtrToStringUTF8((IntPtr)Interop.KvfVideo.DecoderError(decoder)) ?? "";
}
