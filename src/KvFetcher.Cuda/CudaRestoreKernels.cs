using KvFetcher.Core;
using KvFetcher.Cuda.Gpu;

namespace KvFetcher.Cuda;

/// <summary>
/// The device kernels that turn a fetched chunk's decoded data into KV in the cache's wire layout
/// (<c>[layer][kind][token][kvHead][headDim]</c>), compiled with the engine's module: the restore side of the CUDA
/// backend, for the GPU reuse code. Each call queues its kernel on <c>stream</c> and returns; synchronize the stream
/// before reading the output. Kernels check nothing: callers pass buffers the sizes say.
/// </summary>
public sealed class CudaRestoreKernels
{
    private readonly CudaContext _context;
    private readonly CudaKernel _video;
    private readonly CudaKernel _toLsb;
    private readonly CudaKernel _cachegen;

    internal CudaRestoreKernels(CudaContext context, KernelModule module)
    {
        _context = context;
        _video = module.Get("video_restore");
        _toLsb = module.Get("samples_to_lsb");
        _cachegen = module.Get("cachegen_decode");
    }

    /// <summary>
    /// Shifts the first <paramref name="bytes"/> of 16-bit samples in <paramref name="frames"/> down by
    /// <c>16 - depth</c>: NVDEC writes 10- and 12-bit samples in the high bits of their words.
    /// </summary>
    public void SamplesToLowBits(CudaStream stream, DeviceBuffer frames, long bytes, int depth)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(frames);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bytes, frames.Length);
        long samples = bytes / sizeof(ushort);
        var arguments = default(KernelArguments);
        arguments.Add(frames.Pointer);
        arguments.Add((ulong)samples);
        arguments.Add(16 - depth);
        _context.MakeCurrent();
        _toLsb.Launch(stream, (GridFor(samples), 1, 1), 256, 0, ref arguments);
    }

    /// <summary>
    /// Dequantizes the K (<paramref name="kind"/> 0) or V (1) stream's decoded <paramref name="frames"/> (samples of
    /// <paramref name="sampleBytes"/>) into <paramref name="destination"/> as <paramref name="dtype"/>: value
    /// (layer, token, channel) is <c>min + q * step</c> with q the sample at
    /// <c>layerOffsets[layer] + tokenOffsets[token] + channelOffsets[channel]</c>. <paramref name="tables"/> holds, in
    /// order, the int token offsets [tokens], channel offsets [channels] and layer offsets [layers], then the fp32
    /// minima and then steps, [layers * 2 * channels] each.
    /// </summary>
    public void DequantizeVideo(CudaStream stream, DeviceBuffer frames, int sampleBytes, DeviceBuffer tables, int layers, int tokens, int channels, int kind, DeviceBuffer destination, DType dtype)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(frames);
        ArgumentNullException.ThrowIfNull(tables);
        ArgumentNullException.ThrowIfNull(destination);
        ulong tokenOffsets = tables.Pointer;
        ulong channelOffsets = tokenOffsets + ((ulong)tokens * sizeof(int));
        ulong layerOffsets = channelOffsets + ((ulong)channels * sizeof(int));
        ulong mins = layerOffsets + ((ulong)layers * sizeof(int));
        ulong steps = mins + ((ulong)layers * 2 * (ulong)channels * sizeof(float));
        var arguments = default(KernelArguments);
        arguments.Add(frames.Pointer);
        arguments.Add(sampleBytes);
        arguments.Add(tokenOffsets);
        arguments.Add(channelOffsets);
        arguments.Add(layerOffsets);
        arguments.Add(mins);
        arguments.Add(steps);
        arguments.Add(destination.Pointer);
        arguments.Add((int)dtype);
        arguments.Add(layers);
        arguments.Add(kind);
        arguments.Add(tokens);
        arguments.Add(channels);
        _context.MakeCurrent();
        _video.Launch(stream, (GridFor((long)layers * tokens * channels), 1, 1), 256, 0, ref arguments);
    }

    /// <summary>
    /// Arithmetic-decodes the <c>cachegen</c> <paramref name="payload"/> with one thread per (layer, K/V) plane into
    /// <paramref name="destination"/> as <paramref name="dtype"/>. <paramref name="planeTable"/> holds per plane five
    /// ints (table offset, stream offset, stream length, symbols, largest magnitude) checked on the host beforehand;
    /// <paramref name="scales"/> the parameters from the scales on. Each plane's thread writes to
    /// <paramref name="status"/> (one long per plane) the bytes its symbols took, or -1 (stream does not start with
    /// byte 0) or -2 (a code target outside the 16-bit CDF).
    /// </summary>
    public void DecodeCacheGen(CudaStream stream, DeviceBuffer payload, DeviceBuffer scales, DeviceBuffer planeTable, int planes, int tokens, int channels, DeviceBuffer destination, DType dtype, DeviceBuffer status)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(payload);
        ArgumentNullException.ThrowIfNull(scales);
        ArgumentNullException.ThrowIfNull(planeTable);
        ArgumentNullException.ThrowIfNull(destination);
        ArgumentNullException.ThrowIfNull(status);
        var arguments = default(KernelArguments);
        arguments.Add(payload.Pointer);
        arguments.Add(scales.Pointer);
        arguments.Add(planeTable.Pointer);
        arguments.Add(destination.Pointer);
        arguments.Add((int)dtype);
        arguments.Add(planes);
        arguments.Add(tokens);
        arguments.Add(channels);
        arguments.Add(status.Pointer);
        _context.MakeCurrent();
        _cachegen.Launch(stream, ((planes + 31) / 32, 1, 1), 32, 0, ref arguments);
    }

    private static int GridFor(long elements) => (int)Math.Clamp((elements + 255) / 256, 1, 65_535);
}
