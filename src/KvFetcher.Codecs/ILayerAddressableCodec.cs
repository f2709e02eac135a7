using KvFetcher.Core;

namespace KvFetcher.Codecs;

/// <summary>
/// A codec whose layers can be stored, fetched and decoded apart (raw, exact): its payload is a short prefix every layer
/// needs (a stream header, at most <see cref="Core.Containers.ChunkLayerTable.MaxPrefix"/> bytes), then each layer's
/// bytes in layer order, coded independently of the other layers, so that the prefix followed by layers [a, b) is the
/// payload of the same chunk cut to those layers (shape with b - a layers). Its containers are written layer-addressable
/// (<see cref="Core.Containers.ChunkLayerTable"/>) and read by layer range with <see cref="KvCodecContainers.DecodeLayers"/>.
/// </summary>
public interface ILayerAddressableCodec : IKvCodec
{
    /// <summary>
    /// Writes where each layer's bytes end in <paramref name="payload"/> (one per layer of <paramref name="shape"/>) and
    /// returns the prefix's length (where layer 0 starts).
    /// </summary>
    /// <exception cref="InvalidKvDataException">The payload is not one of this codec for the shape.</exception>
    int GetLayerEnds(ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, KvShape shape, DType dtype, int level, Span<long> layerEnds);
}
