using KvFetcher.Core;
using KvFetcher.Core.Containers;

namespace KvFetcher.Codecs;

/// <summary>A codec over the chunk container format (<see cref="ChunkContainer"/>, which knows no codec).</summary>
public static class KvCodecContainers
{
    /// <summary>
    /// Verifies <paramref name="container"/> against <paramref name="expected"/> (<see cref="ChunkContainer.Read(ReadOnlySpan{byte}, in ChunkExpectation, out ReadOnlySpan{byte}, out ReadOnlySpan{byte})"/>)
    /// and decodes its KV into <paramref name="destination"/> with <paramref name="codec"/>, which must be the codec it names.
    /// </summary>
    /// <exception cref="InvalidKvDataException">The container is malformed, not the expected one, or names another codec.</exception>
    public static ChunkHeader DecodeContainer(this IKvCodec codec, ReadOnlySpan<byte> container, in ChunkExpectation expected, Span<byte> destination)
    {
        ArgumentNullException.ThrowIfNull(codec);
        ChunkHeader header = ChunkContainer.Read(container, expected, out ReadOnlySpan<byte> parameters, out ReadOnlySpan<byte> payload);
        if (header.Codec != codec.Id)
        {
            throw new InvalidKvDataException($"KV chunk container: codec id at offset 10 is {header.Codec}: the caller decodes {codec.Name}.");
        }

        codec.Decode(parameters, payload, header.Shape, header.DType, header.TokenStart, header.Level, destination);
        return header;
    }

    /// <summary>
    /// The most bytes a container of one chunk of <paramref name="shape"/> in <paramref name="dtype"/>, encoded by
    /// <paramref name="codec"/> at <paramref name="level"/>, can take (<see cref="IKvCodec.GetMaxEncodedLength"/> plus
    /// the framing; with <paramref name="authenticated"/>, room for a MAC tag): what a reader sizes its buffer by.
    /// </summary>
    public static long GetMaxContainerLength(this IKvCodec codec, KvShape shape, DType dtype, int level, bool authenticated = true)
    {
        ArgumentNullException.ThrowIfNull(codec);
        return ChunkContainer.GetSize(0, codec.GetMaxEncodedLength(shape, dtype, level), authenticated);
    }
}
