using System.Buffers;
using KvFetcher.Core;

namespace KvFetcher.Codecs;

/// <summary>
/// Compresses one chunk of KV. A codec is stateless and thread-safe; per-call scratch comes from pools. Encoding
/// writes two byte strings: small codec parameters (e.g. quantization scales; stored in the container header) and
/// the payload. Decoding writes into a caller-provided destination in the documented layout and raises
/// <see cref="InvalidKvDataException"/> (never another exception, never a hang) on malformed parameters or payload.
/// </summary>
public interface IKvCodec
{
    /// <summary>The codec's id in containers.</summary>
    CodecId Id { get; }

    /// <summary>The codec's name on the command line: raw, exact, cachegen, video.</summary>
    string Name { get; }

    /// <summary>The quality levels this codec offers, best first (level numbers are codec-defined).</summary>
    IReadOnlyList<int> Levels { get; }

    /// <summary>The level used when none is asked for.</summary>
    int DefaultLevel { get; }

    /// <summary>
    /// Why this codec cannot encode or decode in this process (e.g. its native library is missing: what was tried and
    /// what to install), or null when it can. An unavailable codec is left out of ladders, not called.
    /// </summary>
    string? Unavailable => null;

    /// <summary>Whether decoding at <paramref name="level"/> gives back exactly the encoded values.</summary>
    bool IsLossless(int level);

    /// <summary>
    /// Encodes <paramref name="kv"/> (elements of <paramref name="dtype"/>, the documented layout of
    /// <paramref name="shape"/>) at <paramref name="level"/>. <paramref name="tokenStart"/> is the position in its context of
    /// the chunk's first token (the container's <c>TokenStart</c>, non-negative): a codec whose coding depends on positions
    /// (<c>kvtc</c> removes the keys' rotary embedding) uses it, the others ignore it, and decoding must be given the same
    /// value.
    /// </summary>
    void Encode(ReadOnlySpan<byte> kv, KvShape shape, DType dtype, long tokenStart, int level, IBufferWriter<byte> parameters, IBufferWriter<byte> payload);

    /// <summary>
    /// The most bytes <see cref="Encode"/> writes for one chunk of <paramref name="shape"/> in <paramref name="dtype"/>
    /// at <paramref name="level"/>, parameters and payload together, whatever the values (as
    /// <c>BrotliEncoder.GetMaxCompressedLength</c> bounds Brotli's output): a reader sizes its buffers by it and a
    /// stored object larger than it is not a chunk of this shape.
    /// </summary>
    long GetMaxEncodedLength(KvShape shape, DType dtype, int level);

    /// <summary>
    /// Decodes into <paramref name="destination"/> (exactly <c>shape.Elements * dtype.SizeOf()</c> bytes, the documented
    /// layout, elements of <paramref name="dtype"/>) the chunk whose first token is at <paramref name="tokenStart"/>, the
    /// value it was encoded with (a container carries it; <see cref="KvCodecContainers.DecodeContainer"/> passes it on).
    /// </summary>
    void Decode(ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, KvShape shape, DType dtype, long tokenStart, int level, Span<byte> destination);
}
