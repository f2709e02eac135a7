using KvFetcher.Core;
using KvFetcher.Engine;
using KvFetcher.Cuda.Gpu;
using KvFetcher.Cuda.Native;

namespace KvFetcher.Cuda;

/// <summary>
/// The attention keys and values of one sequence in device memory, for every layer and token position in
/// [0, <see cref="KvCacheBase.Capacity"/>): the GPU twin of <see cref="Engine.KvCache"/>, with the same rules. Positions may be
/// filled in any order, by computing them or by importing them; <see cref="KvCacheBase.Length"/> is the longest filled prefix.
/// </summary>
/// <remarks>
/// <para>
/// Values are stored in <see cref="KvCacheBase.StorageDType"/> (rounded to nearest even when written), so an export in the
/// storage dtype followed by an import is exact. Keys are stored after the rotary embedding.
/// </para>
/// <para>
/// Export/import layout, as the CPU cache documents it: little-endian elements of the chosen dtype,
/// <c>[layer][kind: 0 = K, 1 = V][token][kvHead][headDim]</c>. On the device the cache is one buffer
/// <c>[layer][kind][kvHead][position][headDim]</c>, so attention reads a head's keys contiguously.
/// </para>
/// <para>
/// Import and export are synchronous and may run on another thread than the session's forward steps, for disjoint
/// positions (a fetcher restoring one chunk while the engine computes another).
/// </para>
/// </remarks>
public sealed unsafe class CudaKvCache : KvCacheBase, IDisposable
{
    private readonly CudaContext _context;
    private readonly DeviceBuffer _memory;
    private readonly CudaStream _stream;
    private readonly CudaKernel _import;
    private readonly CudaKernel _export;
    private readonly Lock _transferLock = new();
    private DeviceBuffer? _staging;

    internal CudaKvCache(CudaContext context, KernelModule module, int numLayers, int numKvHeads, int headDim, int capacity, DType storageDType)
        : base(numLayers, numKvHeads, headDim, capacity, storageDType)
    {
        _context = context;
        _import = module.Get("kv_import");
        _export = module.Get("kv_export");
        _memory = context.Allocate((long)numLayers * 2 * numKvHeads * capacity * headDim * storageDType.SizeOf());
        try
        {
            _stream = context.CreateStream();
        }
        catch
        {
            _memory.Dispose();
            throw;
        }
    }

    /// <summary>Device memory the cache takes, in bytes.</summary>
    public long DeviceBytes => _memory.Length;

    /// <summary>
    /// Writes the K/V of positions [<paramref name="start"/>, <paramref name="end"/>) to <paramref name="destination"/>
    /// in the documented layout, converting to <paramref name="dtype"/>. Every position must be filled.
    /// </summary>
    public override void Export(int start, int end, DType dtype, Span<byte> destination)
    {
        long needed = CheckExport(start, end, dtype, destination.Length, nameof(destination));
        lock (_transferLock)
        {
            DeviceBuffer staging = Staging(needed);
            ExportTo(start, end, dtype, staging.Pointer);
            fixed (byte* target = destination)
            {
                Check.Cuda(Interop.Cuda.cuMemcpyDtoHAsync(target, staging.Pointer, (nuint)needed, _stream.Handle));
            }

            _stream.Synchronize();
        }
    }

    /// <summary>Like <see cref="Export(int, int, DType, Span{byte})"/>, into device memory at byte <paramref name="offset"/>.</summary>
    public void Export(int start, int end, DType dtype, DeviceBuffer destination, long offset = 0)
    {
        ArgumentNullException.ThrowIfNull(destination);
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        _ = CheckExport(start, end, dtype, destination.Length - offset, nameof(destination));
        lock (_transferLock)
        {
            ExportTo(start, end, dtype, destination.Pointer + (ulong)offset);
            _stream.Synchronize();
        }
    }

    /// <summary>
    /// Fills positions [<paramref name="start"/>, <paramref name="end"/>) from <paramref name="source"/> in the
    /// documented layout and element type <paramref name="dtype"/>; values are rounded to <see cref="KvCacheBase.StorageDType"/>.
    /// </summary>
    public override void Import(int start, int end, DType dtype, ReadOnlySpan<byte> source)
    {
        long needed = CheckImport(start, end, dtype, source.Length, nameof(source));
        lock (_transferLock)
        {
            DeviceBuffer staging = Staging(needed);
            _context.MakeCurrent();
            fixed (byte* data = source)
            {
                Check.Cuda(Interop.Cuda.cuMemcpyHtoDAsync(staging.Pointer, data, (nuint)needed, _stream.Handle));
            }

            ImportFrom(start, end, dtype, staging.Pointer);
            _stream.Synchronize();
        }

        MarkFilled(start, end);
    }

    /// <summary>
    /// Like <see cref="Import(int, int, DType, ReadOnlySpan{byte})"/>, from device memory at byte
    /// <paramref name="offset"/> (e.g. a decoder's output). The caller's writes to <paramref name="source"/> must be
    /// complete (synchronous copies are; work on another stream must have been synchronized).
    /// </summary>
    public void Import(int start, int end, DType dtype, DeviceBuffer source, long offset = 0)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        long needed = GetExportByteCount(Math.Max(0, end - start), dtype);
        if (offset + needed > source.Length)
        {
            throw new ArgumentException($"The source holds {source.Length - offset} bytes from offset {offset}; positions [{start}, {end}) in {dtype.ToShortName()} need {needed}.", nameof(source));
        }

        _ = CheckImport(start, end, dtype, needed, nameof(source));
        lock (_transferLock)
        {
            ImportFrom(start, end, dtype, source.Pointer + (ulong)offset);
            _stream.Synchronize();
        }

        MarkFilled(start, end);
    }

    public override bool SupportsLayerRanges => true;

    /// <summary>
    /// Writes the upper layers [<paramref name="layerStart"/>, <see cref="KvCacheBase.NumLayers"/>) of positions
    /// [<paramref name="start"/>, <paramref name="end"/>) from <paramref name="source"/>, the documented layout cut to
    /// those layers, rounding to <see cref="KvCacheBase.StorageDType"/> as <see cref="Import(int, int, DType, ReadOnlySpan{byte})"/>
    /// does; the positions are filled once their lower layers are computed too
    /// (<see cref="IInferenceSession.PrefillLowerLayers"/>), in either order and from either thread.
    /// </summary>
    public override void ImportLayers(int start, int end, int layerStart, DType dtype, ReadOnlySpan<byte> source)
    {
        long needed = CheckImport(start, end, dtype, source.Length, nameof(source), layerStart);
        lock (_transferLock)
        {
            DeviceBuffer staging = Staging(needed);
            _context.MakeCurrent();
            fixed (byte* data = source)
            {
                Check.Cuda(Interop.Cuda.cuMemcpyHtoDAsync(staging.Pointer, data, (nuint)needed, _stream.Handle));
            }

            ImportFrom(start, end, dtype, staging.Pointer, layerStart);
            _stream.Synchronize();
        }

        Filled.MarkLayers(start, end, layerStart, NumLayers, NumLayers);
    }

    /// <summary>
    /// Like <see cref="ImportLayers(int, int, int, DType, ReadOnlySpan{byte})"/>, from device memory at byte
    /// <paramref name="offset"/> (e.g. a decoder's output), under the same rules as
    /// <see cref="Import(int, int, DType, DeviceBuffer, long)"/>.
    /// </summary>
    public void ImportLayers(int start, int end, int layerStart, DType dtype, DeviceBuffer source, long offset = 0)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        int layers = NumLayers - Math.Clamp(layerStart, 0, NumLayers - 1);
        long needed = GetExportByteCount(Math.Max(0, end - start), dtype) / NumLayers * layers;
        if (offset + needed > source.Length)
        {
            throw new ArgumentException($"The source holds {source.Length - offset} bytes from offset {offset}; layers [{layerStart}, {NumLayers}) of positions [{start}, {end}) in {dtype.ToShortName()} need {needed}.", nameof(source));
        }

        _ = CheckImport(start, end, dtype, needed, nameof(source), layerStart);
        lock (_transferLock)
        {
            ImportFrom(start, end, dtype, source.Pointer + (ulong)offset, layerStart);
            _stream.Synchronize();
        }

        Filled.MarkLayers(start, end, layerStart, NumLayers, NumLayers);
    }

    public void Dispose()
    {
        _staging?.Dispose();
        _stream.Dispose();
        _memory.Dispose();
    }

    /// <summary>Keys of layer <paramref name="layer"/>: [kvHead][capacity][headDim] of <see cref="KvCacheBase.StorageDType"/>.</summary>
    internal ulong LayerKeys(int layer) => _memory.Pointer + (ulong)(((long)layer * 2) * NumKvHeads * Capacity * HeadDim * StorageDType.SizeOf());

    /// <summary>Values of layer <paramref name="layer"/>: [kvHead][capacity][headDim] of <see cref="KvCacheBase.StorageDType"/>.</summary>
    internal ulong LayerValues(int layer) => _memory.Pointer + (ulong)((((long)layer * 2) + 1) * NumKvHeads * Capacity * HeadDim * StorageDType.SizeOf());

    /// <summary>
    /// Marks [start, end) filled and extends <see cref="KvCacheBase.Length"/> over any now-contiguous prefix (after the values are
    /// on the device). Thread-safe.
    /// </summary>
    internal void MarkFilled(int start, int end) => Filled.MarkFilled(start, end);

    /// <summary>
    /// Records that the lower <paramref name="layers"/> layers of [start, end) are computed (after their values are on
    /// the device); the positions are filled once their upper layers are in too. Thread-safe.
    /// </summary>
    internal void MarkLowerLayers(int start, int end, int layers) => Filled.MarkLayers(start, end, 0, layers, NumLayers);

    private void ExportTo(int start, int end, DType dtype, ulong destination)
    {
        int tokens = end - start;
        var arguments = default(KernelArguments);
        arguments.Add(_memory.Pointer);
        arguments.Add(destination);
        arguments.Add((int)dtype);
        arguments.Add(NumLayers);
        arguments.Add(NumKvHeads);
        arguments.Add(Capacity);
        arguments.Add(start);
        arguments.Add(tokens);
        _context.MakeCurrent();
        _export.Launch(_stream, (GridFor((long)NumLayers * 2 * tokens * ChannelsPerToken), 1, 1), 256, 0, ref arguments);
    }

    /// <summary>Queues the import of layers [<paramref name="layerStart"/>, NumLayers) from the wire layout cut to those layers.</summary>
    private void ImportFrom(int start, int end, DType dtype, ulong source, int layerStart = 0)
    {
        int tokens = end - start;
        int layers = NumLayers - layerStart;
        var arguments = default(KernelArguments);
        arguments.Add(source);
        arguments.Add((int)dtype);
        arguments.Add(LayerKeys(layerStart)); // the kernel's layer 0: the cache layout is layer-major
        arguments.Add(layers);
        arguments.Add(NumKvHeads);
        arguments.Add(Capacity);
        arguments.Add(start);
        arguments.Add(tokens);
        _context.MakeCurrent();
        _import.Launch(_stream, (GridFor((long)layers * 2 * tokens * ChannelsPerToken), 1, 1), 256, 0, ref arguments);
    }

    private static int GridFor(long elements) => (int)Math.Clamp((elements + 255) / 256, 1, 65_535);

    private DeviceBuffer Staging(long bytes)
    {
        if (_staging is null || _staging.Length < bytes)
        {
            _staging?.Dispose();
            _staging = null;
            _staging = _context.Allocate(Math.Max(bytes, 1 << 20));
        }

        return _staging;
    }
}
