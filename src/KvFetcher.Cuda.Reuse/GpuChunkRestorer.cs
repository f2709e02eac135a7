using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Cuda.Nvdec;
using KvFetcher.Engine;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Restoring;

namespace KvFetcher.Cuda.Reuse;

/// <summary>
/// Restores fetched chunks into a <see cref="CudaKvCache"/> with one decoder per codec, each an
/// <see cref="IRestoreSlot"/>: <c>cachegen</c> on the CUDA cores (<see cref="CudaCacheGenDecoder"/>), <c>kvtc</c> on the
/// CUDA and tensor cores when asked for (<see cref="CudaKvtcChunkDecoder"/>; the transform uploaded once per transform
/// and level; off by default until a device run has checked it against the CPU decoder), <c>video</c> on
/// NVDEC when an <see cref="NvdecPool"/> is given (<see cref="NvdecVideoDecoder"/>), every other codec on the CPU and
/// copied up (<see cref="HostChunkRestorer.Slot"/>). The device decoders of a slot share its device KV buffer and
/// stream. With <see cref="VerifyFrames"/> each video stream's decoded frames are also checked against the checksum
/// its record declares, as the CPU decoder does.
/// </summary>
public sealed class GpuChunkRestorer : IChunkRestorer
{
    private readonly CudaLanguageModel _model;
    private readonly NvdecPool? _pool;

    /// <param name="model">The engine whose caches chunks are restored into (its context and kernels are used).</param>
    /// <param name="pool">NVDEC decode sessions on the model's device, shared by every slot (and every request using this restorer); null to decode video on the CPU.</param>
    /// <param name="verifyFrames">Check each stream's decoded frames against its declared checksum (a device-to-host copy and a hash per stream).</param>
    /// <param name="kvtcOnGpu">
    /// Decode <c>kvtc</c> on the GPU (<see cref="CudaKvtcChunkDecoder"/>) instead of the CPU. Off by default: the CUDA
    /// decoder is built, but no device run has yet compared it with the CPU decoder (<c>kvf-gpu-check --checks
    /// --check-filter kvtc</c>), and a cached KV must never be restored wrong.
    /// </param>
    public GpuChunkRestorer(CudaLanguageModel model, NvdecPool? pool, bool verifyFrames = true, bool kvtcOnGpu = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        _model = model;
        _pool = pool;
        VerifyFrames = verifyFrames;
        KvtcOnGpu = kvtcOnGpu;
    }

    public string Name => $"{(_pool is null ? "" : $"nvdec x{_pool.Sessions} + ")}cuda cachegen{(KvtcOnGpu ? "/kvtc" : "")} + cpu";

    /// <summary>Whether <c>kvtc</c> chunks are decoded on the GPU.</summary>
    public bool KvtcOnGpu { get; }

    /// <summary>Whether decoded frames are checked against their streams' checksums.</summary>
    public bool VerifyFrames { get; }

    public IRestoreSlot CreateSlot(KvShape shape, DType dtype) => new Slot(this, shape, dtype);

    /// <summary>Layer ranges (ours-layer) are read only from layer-addressable codecs (raw, exact), which decode on the CPU.</summary>
    public bool SupportsLayerRanges => true;

    /// <summary>Picks the decoder for each chunk's codec; restores with the one that decoded it.</summary>
    private sealed class Slot : IRestoreSlot
    {
        private readonly DeviceChunk _chunk;
        private readonly CudaCacheGenDecoder _cachegen;
        private readonly CudaKvtcChunkDecoder? _kvtc;
        private readonly NvdecVideoDecoder? _video;
        private readonly HostChunkRestorer.Slot _host;
        private IRestoreSlot? _decoded;

        public Slot(GpuChunkRestorer owner, KvShape shape, DType dtype)
        {
            _chunk = new DeviceChunk(owner._model, shape, dtype);
            _cachegen = new CudaCacheGenDecoder(_chunk);
            _kvtc = owner.KvtcOnGpu ? new CudaKvtcChunkDecoder(_chunk) : null;
            _video = owner._pool is null ? null : new NvdecVideoDecoder(_chunk, owner._pool, owner.VerifyFrames);
            _host = new HostChunkRestorer.Slot(checked((int)(shape.Elements * dtype.SizeOf())), dtype);
        }

        public void Decode(ReadOnlyMemory<byte> container, in ChunkExpectation expected, KvVariant variant)
        {
            _decoded = null;
            IRestoreSlot decoder = variant.Codec switch
            {
                CodecId.CacheGen => _cachegen,
                CodecId.Kvtc when _kvtc is not null => _kvtc,
                CodecId.Video when _video is not null => _video,
                _ => _host,
            };
            decoder.Decode(container, expected, variant);
            _decoded = decoder;
        }

        public void Restore(IKvCache cache, int start, int end)
        {
            if (_decoded is null)
            {
                throw new InvalidOperationException("No chunk was decoded into this slot.");
            }

            _decoded.Restore(cache, start, end);
        }

        public bool SupportsLayerRanges => true;

        public void DecodeLayers(ChunkLayerTable table, ReadOnlyMemory<byte> layerBytes, int layerStart, KvVariant variant)
        {
            _decoded = null;
            _host.DecodeLayers(table, layerBytes, layerStart, variant);
            _decoded = _host;
        }

        public void RestoreLayers(IKvCache cache, int start, int end, int layerStart) =>
            (_decoded ?? throw new InvalidOperationException("No chunk was decoded into this slot.")).RestoreLayers(cache, start, end, layerStart);

        public void Dispose()
        {
            _host.Dispose();
            _video?.Dispose();
            _cachegen.Dispose();
            _kvtc?.Dispose();
            _chunk.Dispose();
        }
    }
}
