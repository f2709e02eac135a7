using System.Collections.Concurrent;
using KvFetcher.Core;
using KvFetcher.Cuda.Gpu;
using KvFetcher.Cuda.Native;

namespace KvFetcher.Cuda.Kvtc;

/// <summary>
/// The <c>kvtc</c> codec's device kernels (Gpu/Kernels/Kvtc.cu, a program of its own compiled by NVRTC on first use)
/// and the device tables of the transforms and levels decoded so far (<see cref="Tables"/>), for one context. Each
/// launch queues on the caller's stream and returns. Kernels check each segment's stream and nothing else: callers
/// pass buffers and tables the host has checked (<see cref="CudaKvtcDecoder"/> does).
/// </summary>
public sealed class CudaKvtcKernels : IDisposable
{
    /// <summary>The program: Kvtc.cu and the engine's headers it includes.</summary>
    internal static KernelSource Source { get; } = KernelSource.Embedded(typeof(KernelModule).Assembly, "KvFetcher.Cuda.Kernels.", "Kvtc.cu");

    /// <summary>What Common.cuh needs defined; the kvtc kernels take every size as an argument.</summary>
    internal static IReadOnlyList<string> Defines { get; } = ["HEAD_DIM=128", "KV=f16_t", "ACT=f16_t", "EMB=f16_t"];

    private readonly KernelModule _module;
    private readonly CudaKernel _decode;
    private readonly CudaKernel _exact;
    private readonly CudaKernel _finish;
    private readonly ConcurrentDictionary<string, Lazy<CudaKvtcTables>> _tables = new(StringComparer.Ordinal);

    private CudaKvtcKernels(CudaContext context, KernelModule module)
    {
        Context = context;
        _module = module;
        _decode = module.Get("kvtc_decode_segments");
        _exact = module.Get("kvtc_copy_exact");
        _finish = module.Get("kvtc_finish");
    }

    public CudaContext Context { get; }

    /// <summary>Compiles the kernels for <paramref name="context"/>'s device and loads them.</summary>
    /// <exception cref="CudaException">NVRTC or the module load failed (the message holds NVRTC's log).</exception>
    public static CudaKvtcKernels Compile(CudaContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return new CudaKvtcKernels(context, KernelModule.Compile(context, Source, Defines));
    }

    /// <summary>
    /// The device tables for <paramref name="key"/> (a transform's id and level), made by <paramref name="create"/> on
    /// first use and kept until <see cref="Dispose"/>: a transform is uploaded once, not per chunk.
    /// </summary>
    public CudaKvtcTables Tables(string key, Func<CudaKvtcTables> create)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(create);
        Lazy<CudaKvtcTables> entry = _tables.GetOrAdd(key, _ => new Lazy<CudaKvtcTables>(create, LazyThreadSafetyMode.ExecutionAndPublication));
        try
        {
            return entry.Value;
        }
        catch
        {
            // A failed upload is not cached: the next chunk tries again.
            _tables.TryRemove(new KeyValuePair<string, Lazy<CudaKvtcTables>>(key, entry));
            throw;
        }
    }

    public void Dispose()
    {
        foreach (Lazy<CudaKvtcTables> entry in _tables.Values)
        {
            if (entry.IsValueCreated)
            {
                entry.Value.Dispose();
            }
        }

        _tables.Clear();
        _module.Dispose();
    }

    /// <summary>Copies <paramref name="source"/> to <paramref name="destination"/> in order with <paramref name="stream"/>'s work (the bytes are staged before this returns).</summary>
    internal static unsafe void Upload(CudaStream stream, DeviceBuffer destination, ReadOnlySpan<byte> source)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(source.Length, destination.Length, nameof(source));
        if (source.IsEmpty)
        {
            return;
        }

        stream.Context.MakeCurrent();
        fixed (byte* data = source)
        {
            Check.Cuda(Interop.Cuda.cuMemcpyHtoDAsync(destination.Pointer, data, (nuint)source.Length, stream.Handle));
        }
    }

    internal static void Clear(CudaStream stream, DeviceBuffer buffer, long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bytes, buffer.Length);
        stream.Context.MakeCurrent();
        Check.Cuda(Interop.Cuda.cuMemsetD8Async(buffer.Pointer, 0, (nuint)bytes, stream.Handle));
    }

    internal void CopyExact(CudaStream stream, DeviceBuffer payload, DeviceBuffer destination, int planes, int tokens, int head, int tail, int rowBytes)
    {
        var arguments = default(KernelArguments);
        arguments.Add(payload.Pointer);
        arguments.Add(destination.Pointer);
        arguments.Add(planes);
        arguments.Add(tokens);
        arguments.Add(head);
        arguments.Add(tail);
        arguments.Add(rowBytes);
        Context.MakeCurrent();
        _exact.Launch(stream, (GridFor((long)planes * (head + tail) * rowBytes), 1, 1), 256, 0, ref arguments);
    }

    internal void DecodeSegments(CudaStream stream, DeviceBuffer payload, DeviceBuffer decodeTables, DeviceBuffer segments, int segmentCount, CudaKvtcTables tables,
        int coded, int escapeOffset, DeviceBuffer coefficients, DeviceBuffer status)
    {
        const int Threads = 64;
        var arguments = default(KernelArguments);
        arguments.Add(payload.Pointer);
        arguments.Add(decodeTables.Pointer);
        arguments.Add(decodeTables.Pointer + (ulong)CudaKvtcDecoder.SlotTableBytes);
        arguments.Add(segments.Pointer);
        arguments.Add(segmentCount);
        arguments.Add(tables.WidthCounts.Pointer);
        arguments.Add(tables.WidthOffsets.Pointer);
        arguments.Add(tables.Components.Pointer);
        arguments.Add(tables.ChannelStarts.Pointer);
        arguments.Add(tables.Blocks);
        arguments.Add(coded);
        arguments.Add(escapeOffset);
        arguments.Add(coefficients.Pointer);
        arguments.Add(status.Pointer);
        Context.MakeCurrent();
        _decode.Launch(stream, ((segmentCount + Threads - 1) / Threads, 1, 1), Threads, 0, ref arguments);
    }

    internal void Finish(CudaStream stream, DeviceBuffer y, CudaKvtcTables tables, DeviceBuffer destination, DType dtype, int tokens, int head, int coded, long positionStart)
    {
        var arguments = default(KernelArguments);
        arguments.Add(y.Pointer);
        arguments.Add(tables.Means.Pointer);
        arguments.Add(tables.ChannelStarts.Pointer);
        arguments.Add(tables.InverseFrequencies.Pointer);
        arguments.Add(tables.Pairing);
        arguments.Add(tables.HeadDim);
        arguments.Add(destination.Pointer);
        arguments.Add((int)dtype);
        arguments.Add(tables.Layers);
        arguments.Add(tables.GroupLayers);
        arguments.Add(tokens);
        arguments.Add(head);
        arguments.Add(coded);
        arguments.Add(tables.Channels);
        arguments.Add((ulong)positionStart);
        Context.MakeCurrent();
        _finish.Launch(stream, (GridFor((long)tables.Layers * 2 * coded * tables.Channels), 1, 1), 256, 0, ref arguments);
    }

    private static int GridFor(long elements) => (int)Math.Clamp((elements + 255) / 256, 1, 65_535);
}
