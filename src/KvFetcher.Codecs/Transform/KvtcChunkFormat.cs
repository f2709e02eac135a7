using System.Buffers.Binary;
using KvFetcher.Core;

namespace KvFetcher.Codecs.Transform;

/// <summary>
/// The one definition of a kvtc chunk (parameters and payload), written by the encoder and checked field by field by
/// every reader before a byte of the payload is used.
/// </summary>
/// <remarks>
/// <code>
/// parameters (32 bytes, little-endian):
///   0   u8      format version (2; version 1 coded one rANS block per bit width and is refused: re-encode)
///   1   u8      level
///   2   u16     layers
///   4   u16     kvHeads
///   6   u16     headDim
///   8   u32     tokens
///   12  u16     exact head tokens h (the transform's, capped at tokens)
///   14  u16     exact tail tokens e (the transform's, capped at tokens - h)
///   16  u8[16]  id of the transform the chunk was coded with (<see cref="KvtcTransform.Id"/>)
/// payload:
///   exact values: per plane p = layer * 2 + kind, tokens [0, h) then [tokens - e, tokens), channels, as stored (bit-identical)
///   for the tokens [h, tokens - e) of every plane (nothing when that range is empty), keys taken back to before their
///   rotary embedding at position tokenStart + t (the transform's key rotation; tokenStart is the container's):
///     the symbols of bit width b (b = 1..7) are, blocks in order, each block's coded tokens token-major with the block's
///     components of width b ascending: q + 127 for the quantized coefficient q = round(c / step) in [-127, 127], 255 = escape;
///     per bit width b that has symbols, ascending:
///       one segmented rANS table (<see cref="Entropy.StaticRans.SegmentTable"/>: scale 12, bitmap, frequencies)
///       u32     segments: ceil(symbols of width b / <see cref="SegmentSymbols"/>); segment i holds symbols
///               [i * SegmentSymbols, min((i + 1) * SegmentSymbols, n))
///       per segment: u32 stream bytes (at least 8), u32 escapes among its symbols
///       per segment: its rANS stream (two states, then renormalization bytes), back to back in segment order
///     u32 escapes (the segments' escapes summed); i16[escapes] the coefficients coded as 255, bit widths ascending,
///     segments in order, symbols in order; the payload ends there
/// </code>
/// </remarks>
internal static class KvtcChunkFormat
{
    public const int ParametersSize = 32;
    public const byte Version = 2;

    /// <summary>Symbols per rANS segment (the last segment of a bit width holds the rest).</summary>
    public const int SegmentSymbols = 8192;

    /// <summary>Bytes of one segment's entry in its bit width's segment table (stream bytes, escapes).</summary>
    public const int SegmentEntryBytes = 8;

    /// <summary>The most segments a chunk may declare (a 65,536-token chunk of Llama-3-8B's shape holds 2^32 values: far fewer).</summary>
    public const int MaxSegments = 1 << 22;
    public const int Escape = 255;
    public const int MaxMagnitude = 127;

    /// <summary>The most bytes of framing a chunk's entropy-coded part takes besides its symbols' bytes: per bit width a table and a segment count, per segment its entry and up to 16 bytes of states and slack, and the escape count.</summary>
    public static long FramingBound(long symbols) =>
        4 + (KvtcTransform.MaxBits * (Entropy.StaticRans.MaxTableBytes + 4L)) + (((symbols / SegmentSymbols) + KvtcTransform.MaxBits) * (SegmentEntryBytes + 16L));

    public readonly record struct Header(int Level, int Tokens, int ExactHead, int ExactTail);

    public static void Write(Span<byte> destination, int level, KvShape shape, int exactHead, int exactTail, ReadOnlySpan<byte> transformId)
    {
        destination[0] = Version;
        destination[1] = (byte)level;
        BinaryPrimitives.WriteUInt16LittleEndian(destination[2..], (ushort)shape.Layers);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[4..], (ushort)shape.KvHeads);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[6..], (ushort)shape.HeadDim);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[8..], (uint)shape.Tokens);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[12..], (ushort)exactHead);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[14..], (ushort)exactTail);
        transformId.CopyTo(destination[16..]);
    }

    /// <summary>The exact tokens of a chunk of <paramref name="tokens"/> tokens under <paramref name="transform"/>.</summary>
    public static (int Head, int Tail) ExactTokens(KvtcTransform transform, int tokens)
    {
        int head = Math.Min(transform.ExactHead, tokens);
        return (head, Math.Min(transform.ExactTail, tokens - head));
    }

    /// <summary>
    /// Checks <paramref name="parameters"/> against the caller's shape and level and returns the transform it names:
    /// <paramref name="bound"/> when given (a chunk naming another transform is refused), else the loaded one.
    /// </summary>
    public static (Header Header, KvtcTransform Transform) Read(ReadOnlySpan<byte> parameters, KvShape shape, int level, KvtcTransform? bound)
    {
        if (parameters.Length != ParametersSize)
        {
            throw new InvalidKvDataException($"kvtc: parameters hold {parameters.Length} bytes; a kvtc chunk has {ParametersSize}.");
        }

        if (parameters[0] != Version)
        {
            throw new InvalidKvDataException(parameters[0] == 1
                ? $"kvtc: parameters offset 0: format version 1 (one rANS stream per bit width) is no longer read; this build reads version {Version} (segmented streams): encode the chunk again."
                : $"kvtc: parameters offset 0: format version {parameters[0]} is not {Version}.");
        }

        if (parameters[1] != level)
        {
            throw new InvalidKvDataException($"kvtc: parameters offset 1: level {parameters[1]} does not match the requested level {level}.");
        }

        int layers = BinaryPrimitives.ReadUInt16LittleEndian(parameters[2..]);
        int kvHeads = BinaryPrimitives.ReadUInt16LittleEndian(parameters[4..]);
        int headDim = BinaryPrimitives.ReadUInt16LittleEndian(parameters[6..]);
        uint tokens = BinaryPrimitives.ReadUInt32LittleEndian(parameters[8..]);
        if (layers != shape.Layers || kvHeads != shape.KvHeads || headDim != shape.HeadDim || tokens != (uint)shape.Tokens)
        {
            throw new InvalidKvDataException($"kvtc: parameters offset 2: layers/kvHeads/headDim/tokens {layers}/{kvHeads}/{headDim}/{tokens} do not match {shape}.");
        }

        ReadOnlySpan<byte> id = parameters.Slice(16, KvtcTransform.IdSize);
        KvtcTransform? transform = bound ?? KvtcTransforms.Find(id);
        if (transform is null)
        {
            throw new InvalidKvDataException($"kvtc: parameters offset 16: the chunk was coded with transform {Convert.ToHexStringLower(id)}, which is not loaded (calibrated for another model or refitted since; the chunk cannot be decoded).");
        }

        if (!transform.Id.SequenceEqual(id))
        {
            throw new InvalidKvDataException($"kvtc: parameters offset 16: the chunk was coded with transform {Convert.ToHexStringLower(id)}; this decoder holds {transform.IdText}.");
        }

        if (!transform.Fits(shape))
        {
            throw new InvalidKvDataException($"kvtc: transform {transform.IdText} is for {transform.Layers} layers x {transform.KvHeads} x {transform.HeadDim}; the chunk is {shape}.");
        }

        int head = BinaryPrimitives.ReadUInt16LittleEndian(parameters[12..]);
        int tail = BinaryPrimitives.ReadUInt16LittleEndian(parameters[14..]);
        (int expectedHead, int expectedTail) = ExactTokens(transform, shape.Tokens);
        if (head != expectedHead || tail != expectedTail)
        {
            throw new InvalidKvDataException($"kvtc: parameters offset 12: exact head/tail tokens {head}/{tail}; the transform keeps {expectedHead}/{expectedTail} of a {shape.Tokens}-token chunk.");
        }

        return (new Header(level, shape.Tokens, head, tail), transform);
    }
}
