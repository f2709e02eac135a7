using System.Runtime.InteropServices;
using KvFetcher.Cuda.Nvdec.Native;
using CudaApi = KvFetcher.Cuda.Native.Interop.Cuda;

namespace KvFetcher.Cuda.Nvdec;

/// <summary>
/// One GPU's NVDEC engines: retains the device's primary CUDA context (shared with the rest of the process) for the
/// decoders, buffers and pools made from it. Thread-safe; dispose after everything made from it.
/// </summary>
public sealed unsafe class NvdecDevice : IDisposable
{
    private readonly CudaPrimaryContextHandle _context;

    private NvdecDevice(int ordinal, string name, CudaPrimaryContextHandle context)
    {
        Ordinal = ordinal;
        Name = name;
        _context = context;
    }

    /// <summary>The CUDA device ordinal.</summary>
    public int Ordinal { get; }

    /// <summary>The device's name (e.g. "NVIDIA H100 80GB HBM3").</summary>
    public string Name { get; }

    internal CudaPrimaryContextHandle Context => _context;

    /// <summary>
    /// Whether NVDEC can decode the <c>video</c> codec's streams here: the driver's libraries load, a CUDA device exists
    /// and its NVDEC decodes HEVC 4:4:4 at 8, 10 and 12 bits. Otherwise <paramref name="reason"/> says what is missing.
    /// </summary>
    public static bool IsSupported(out string reason)
    {
        if (NvdecLibraries.Problem is { } problem)
        {
            reason = problem;
            return false;
        }

        try
        {
            int init = (int)CudaApi.cuInit(0);
            int count = 0;
            if (init != CudaStatus.Success || (int)CudaApi.cuDeviceGetCount(&count) != CudaStatus.Success || count == 0)
            {
                reason = init != CudaStatus.Success
                    ? $"cuInit failed: {CudaStatus.Name(init)}; the driver is installed but no usable GPU was found."
                    : "The CUDA driver reports no GPU.";
                return false;
            }

            using NvdecDevice device = Open();
            foreach (int depth in new[] { 8, 10, 12 })
            {
                NvdecCapabilities caps = device.GetCapabilities(depth);
                if (!caps.IsSupported || caps.MinWidth > NvdecStreamFormat.MinSide || caps.MinHeight > NvdecStreamFormat.MinSide)
                {
                    reason = $"{device.Name}'s NVDEC does not decode HEVC 4:4:4 {depth}-bit frames of {NvdecStreamFormat.MinSide}x{NvdecStreamFormat.MinSide} ({caps}).";
                    return false;
                }
            }

            reason = "";
            return true;
        }
        catch (NvdecException ex)
        {
            reason = ex.Message;
            return false;
        }
    }

    /// <summary>Opens device <paramref name="ordinal"/>; throws <see cref="DllNotFoundException"/> without the driver.</summary>
    public static NvdecDevice Open(int ordinal = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(ordinal);
        NvdecLibraries.EnsureLoaded();
        CudaStatus.Check((int)CudaApi.cuInit(0));
        int device;
        CudaStatus.Check((int)CudaApi.cuDeviceGet(&device, ordinal));
        byte* name = stackalloc byte[256];
        CudaStatus.Check((int)CudaApi.cuDeviceGetName(name, 256, device));
        return new NvdecDevice(ordinal, Marshal.PtrToStringUTF8((IntPtr)name) ?? $"CUDA device {ordinal}", CudaPrimaryContextHandle.Retain(device));
    }

    /// <summary>What NVDEC reports for HEVC 4:4:4 at <paramref name="depth"/> bits.</summary>
    public NvdecCapabilities GetCapabilities(int depth)
    {
        if (depth is not (8 or 10 or 12))
        {
            throw new ArgumentOutOfRangeException(nameof(depth), depth, "HEVC streams here are 8, 10 or 12 bits.");
        }

        var caps = new CuvidDecodeCaps { CodecType = CuvidCodec.Hevc, ChromaFormat = CuvidChromaFormat.Yuv444, BitDepthMinus8 = (uint)(depth - 8) };
        using (Enter())
        {
            CudaStatus.Check(Interop.Nvcuvid.GetDecoderCaps(&caps));
        }

        return new NvdecCapabilities(depth, caps.IsSupported != 0, caps.NumNvdecs, caps.MinWidth, caps.MinHeight, (int)caps.MaxWidth, (int)caps.MaxHeight, caps.OutputFormatMask);
    }

    public void Dispose() => _context.Dispose();

    /// <summary>Makes the device's context current on this thread until the scope is disposed.</summary>
    internal ContextScope Enter()
    {
        ObjectDisposedException.ThrowIf(_context.IsClosed, this);
        CudaStatus.Check((int)CudaApi.cuCtxPushCurrent(_context.DangerousGetHandle()));
        return default;
    }

    /// <summary>Pops the context <see cref="Enter"/> pushed.</summary>
    internal readonly struct ContextScope : IDisposable
    {
        public void Dispose()
        {
            IntPtr popped;
            CudaStatus.Check((int)CudaApi.cuCtxPopCurrent(&popped));
        }
    }
}
