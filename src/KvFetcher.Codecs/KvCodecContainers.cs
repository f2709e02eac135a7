using System.Buffers;
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
    /// Writes <paramref name="header"/>'s chunk, encoded by <paramref name="codec"/> as <paramref name="parameters"/> and
    /// <paramref name="payload"/>, as a container: layer-addressable in groups of <paramref name="groupLayers"/> layers
    /// (<see cref="ChunkContainer.WriteLayered"/>) when the codec is an <see cref="ILayerAddressableCodec"/> and
    /// <paramref name="groupLayers"/> is positive, else a plain one.
    /// </summary>
    public static void WriteContainer(this IKvCodec codec, in ChunkHeader header, ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, int groupLayers,
        IBufferWriter<byte> output, ChunkMacKey? mac = null)
    {
        ArgumentNullException.ThrowIfNull(codec);
        if (groupLayers <= 0 || codec is not ILayerAddressableCodec layered)
        {
            ChunkContainer.Write(header, parameters, payload, output, mac);
            return;
        }

        int layers = header.Shape.Layers;
        long[] ends = ArrayPool<long>.Shared.Rent(layers);
        try
        {
            int prefix = layered.GetLayerEnds(parameters, payload, header.Shape, header.DType, header.Level, ends.AsSpan(0, layers));
            ChunkContainer.WriteLayered(header, parameters, payload, prefix, ends.AsSpan(0, layers), Math.Min(groupLayers, layers), output, mac);
        }
        finally
        {
            ArrayPool<long>.Shared.Return(ends);
        }
    }

    /// <summary>
    /// Decodes layers [<paramref name="layerStart"/>, <paramref name="layerEnd"/>) of a layer-addressable container from
    /// <paramref name="layerBytes"/>, the bytes at <see cref="ChunkLayerTable.RangeOf"/> of its checked head
    /// <paramref name="table"/> (<see cref="ChunkLayerTable.ReadHead"/>), after checking each group's checksum, into
    /// <paramref name="destination"/>: the wire layout of the chunk cut to those layers.
    /// </summary>
    /// <exception cref="InvalidKvDataException">The bytes are corrupt, the container names another codec, or the codec refuses them.</exception>
    public static void DecodeLayers(this IKvCodec codec, ChunkLayerTable table, ReadOnlySpan<byte> layerBytes, int layerStart, int layerEnd, Span<byte> destination)
    {
        ArgumentNullException.ThrowIfNull(codec);
        ArgumentNullException.ThrowIfNull(table);
        ChunkHeader header = table.Header;
        if (header.Codec != codec.Id || codec is not ILayerAddressableCodec)
        {
            throw new InvalidKvDataException($"KV chunk container: codec id at offset 10 is {header.Codec}: the caller decodes layer ranges of {codec.Name}.");
        }

        table.Verify(layerStart, layerEnd, layerBytes);
        KvShape cut = header.Shape with { Layers = layerEnd - layerStart };
        ReadOnlySpan<byte> prefix = table.Prefix;
        if (prefix.IsEmpty)
        {
            codec.Decode([], layerBytes, cut, header.DType, header.TokenStart, header.Level, destination);
            return;
        }

        byte[] joined = ArrayPool<byte>.Shared.Rent(prefix.Length + layerBytes.Length);
        try
        {
            prefix.CopyTo(joined);
            layerBytes.CopyTo(joined.AsSpan(prefix.Length));
            codec.Decode([], joined.AsSpan(0, prefix.Length + layerBytes.Length), cut, header.DType, header.TokenStart, header.Level, destination);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(joined);
        }
    }

    /// <summary>
    /// The most bytes a container of one chunk of <paramref name="shape"/> in <paramref name="dtype"/>, encoded by
    /// <paramref name="codec"/> at <paramref name="level"/>, can take (<see cref="IKvCodec.GetMaxEncodedLength"/> plus
    /// the framing; with <paramref name="authenticated"/>, room for a MAC tag): what a reader sizes its buffer by.
    /// </summary>
    public static long GetMaxContainerLength(this IKvCodec codec, KvShape shape, DType dtype, int level, bool authenticated = true)
    {
        ArgumentNullException.ThrowIfNull(codec);
        long table = codec is ILayerAddressableCodec ? ChunkLayerTable.SizeOf(shape.Layers, 1) : 0; // room for the largest layer table
        return ChunkContainer.GetSize(0, codec.GetMaxEncodedLength(shape, dtype, level), authenticated) + table;
    }
}
