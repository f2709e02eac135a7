using KvFetcher.Core;
using KvFetcher.Engine;

namespace KvFetcher.Cuda.Reuse;

/// <summary>
/// One restore slot's chunk in device memory, in the cache's wire layout, with the stream the device decoders queue
/// their kernels on; the decoders of a slot share it (a slot holds one chunk at a time).
/// </summary>
internal sealed class DeviceChunk : IDisposable
{
    private DeviceBuffer? _kv;
    private CudaStream? _stream;

    public DeviceChunk(CudaLanguageModel model, KvShape shape, DType dtype)
    {
        Model = model;
        Shape = shape;
        DType = dtype;
    }

    public CudaLanguageModel Model { get; }

    public CudaContext Context => Model.Context;

    public KvShape Shape { get; }

    public DType DType { get; }

    /// <summary>The chunk's KV, [layer][kind][token][kvHead][headDim] of <see cref="DType"/>.</summary>
    public DeviceBuffer Kv => _kv ??= Context.Allocate(Shape.Elements * DType.SizeOf());

    public CudaStream Stream => _stream ??= Context.CreateStream();

    /// <summary>Imports the decoded chunk into positions [start, end) of <paramref name="cache"/>, which must be a device cache.</summary>
    public void RestoreInto(IKvCache cache, int start, int end)
    {
        if (cache is not CudaKvCache device)
        {
            throw new InvalidOperationException($"A GPU decoder restores into a {nameof(CudaKvCache)}; this session's cache is a {cache.GetType().Name}.");
        }

        device.Import(start, end, DType, Kv);
    }

    public void Dispose()
    {
        _kv?.Dispose();
        _stream?.Dispose();
    }
}
