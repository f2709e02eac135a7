using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Engine;

namespace KvFetcher.Fetch.Restoring;

/// <summary>
/// How fetched chunks get from their containers into an engine's KV cache: decoding on the CPU into host memory and
/// importing (<see cref="HostChunkRestorer"/>, any engine and codec), or on the decoders next to the engine, e.g. the
/// GPU's NVDEC for the <c>video</c> codec with a kernel restoring straight into device KV memory. The fetcher gives
/// every chunk slot its own <see cref="IRestoreSlot"/>, so a request's memory stays fixed.
/// </summary>
public interface IChunkRestorer
{
    /// <summary>Where chunks are decoded, for reports (e.g. "cpu", "nvdec+cpu").</summary>
    string Name { get; }

    /// <summary>Working state for one slot: chunks of <paramref name="shape"/> in <paramref name="dtype"/>.</summary>
    IRestoreSlot CreateSlot(KvShape shape, DType dtype);

    /// <summary>Whether its slots decode and restore layer ranges (<see cref="IRestoreSlot.DecodeLayers"/>).</summary>
    bool SupportsLayerRanges => false;
}

/// <summary>
/// One chunk slot's decode and restore state. <see cref="Decode"/> runs on a decode worker, <see cref="Restore"/>
/// afterwards on the restore worker; a slot holds one chunk at a time.
/// </summary>
public interface IRestoreSlot : IDisposable
{
    /// <summary>
    /// Checks <paramref name="container"/> against <paramref name="expected"/> (structure, checksum, key, model,
    /// position, shape, dtype, codec) and decodes it; throws <see cref="InvalidKvDataException"/> if it is corrupt or not
    /// this chunk's, or if the decoded values fail the codec's own check. Nothing unverified is ever restored.
    /// </summary>
    void Decode(ReadOnlyMemory<byte> container, in ChunkExpectation expected, KvVariant variant);

    /// <summary>Writes the decoded chunk into <paramref name="cache"/> positions [<paramref name="start"/>, <paramref name="end"/>).</summary>
    void Restore(IKvCache cache, int start, int end);

    /// <summary>Whether <see cref="DecodeLayers"/> and <see cref="RestoreLayers"/> work (layer-wise overlap).</summary>
    bool SupportsLayerRanges => false;

    /// <summary>
    /// Decodes layers [<paramref name="layerStart"/>, layers) of a layer-addressable container from
    /// <paramref name="layerBytes"/>, its bytes at <see cref="ChunkLayerTable.RangeOf"/> of its checked head
    /// <paramref name="table"/>; throws <see cref="InvalidKvDataException"/> if a group's checksum fails.
    /// </summary>
    void DecodeLayers(ChunkLayerTable table, ReadOnlyMemory<byte> layerBytes, int layerStart, KvVariant variant) =>
        throw new NotSupportedException("This restorer does not decode layer ranges.");

    /// <summary>Writes the decoded upper layers into <paramref name="cache"/> positions [<paramref name="start"/>, <paramref name="end"/>) (<see cref="IKvCache.ImportLayers"/>).</summary>
    void RestoreLayers(IKvCache cache, int start, int end, int layerStart) =>
        throw new NotSupportedException("This restorer does not restore layer ranges.");
}
