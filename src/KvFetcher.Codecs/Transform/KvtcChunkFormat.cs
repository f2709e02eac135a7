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
///   0   u8      format version (1)
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
///     per bit width b = 1..7 that the level gives any component, ascending: one rANS block
///       (<see cref="Entropy.StaticRans"/>) of those components' symbols, planes in order, each token-major with its
///       components ascending: symbol q + 127 for the quantized coefficient q = round(c / step) in [-127, 127], 255 = escape
///     u32 escapes; i16[escapes] the coefficients coded as 255, in plane, token, component order; the payload ends there
/// </code>
/// </remarks>
internal static class KvtcChunkFormat
{
    public const int ParametersSize = 32;
    public const byte Version = 1;
    public const int Escape = 255;
    public const int MaxMagnitude = 127;

    /// <summary>The most bytes one rANS block's table and framing take (scale, bitmap, 256 three-byte varints, length, states).</summary>
    public const int RansOverhead = 1 + 32 + (256 * 3) + 4 + 8;

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
            throw new InvalidKvDataException($"kvtc: parameters offset 0: format version {parameters[0]} is not {Version}.");
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
