using KvFetcher.Cuda.Native;

namespace KvFetcher.Cuda.Nvdec;

/// <summary>
/// One GPU's NVDEC engines, on the device's <see cref="CudaContext"/> (its primary context, shared with the rest of the
/// process and with the CUDA engine): decoders and pools are made from it, and the device memory they decode into is a
/// <see cref="DeviceBuffer"/> of <see cref="Context"/>. Thread-safe; dispose after everything made from it.
/// </summary>
public sealed unsafe class NvdecDevice : IDisposable
{
    private readonly bool _ownsContext;

    private NvdecDevice(CudaContext context, bool ownsContext)
    {
        Context = context;
        _ownsContext = ownsContext;
    }

    /// <summary>The CUDA device ordinal.</summary>
    public int Ordinal => Context.DeviceOrdinal;

    /// <summary>The device's name (e.g. "NVIDIA H100 80GB HBM3").</summary>
    public string Name => Context.DeviceName;

    /// <summary>The device's context: where decoders run and where buffers to decode into are allocated.</summary>
    public CudaContext Context { get; }

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
            CudaResult init = Interop.Cuda.cuInit(0);
            int count = 0;
            if (init != CudaResult.Success || Interop.Cuda.cuDeviceGetCount(&count) != CudaResult.Success || count == 0)
            {
                reason = init != CudaResult.Success
                    ? $"cuInit failed: {Check.CudaName(init)}; the driver is installed but no usable GPU was found."
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
        catch (CudaException ex)
        {
            reason = ex.Message;
            return false;
        }
    }

    /// <summary>Opens device <paramref name="ordinal"/> (the CUDA driver alone); throws <see cref="DllNotFoundException"/> without the driver.</summary>
    public static NvdecDevice Open(int ordinal = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(ordinal);
        NvdecLibraries.EnsureLoaded();
        return new NvdecDevice(CudaContext.Open(ordinal), ownsContext: true);
    }

    /// <summary>
    /// NVDEC on the device of <paramref name="context"/> (e.g. the CUDA engine's), which stays the caller's: dispose
    /// the device before it. Throws <see cref="DllNotFoundException"/> without the driver's video library.
    /// </summary>
    public static NvdecDevice Open(CudaContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        NvdecLibraries.EnsureLoaded();
        return new NvdecDevice(context, ownsContext: false);
    }

    /// <summary>What NVDEC reports for HEVC 4:4:4 at <paramref name="depth"/> bits.</summary>
    public NvdecCapabilities GetCapabilities(int depth)
    {
        if (depth is not (8 or 10 or 12))
        {
            throw new ArgumentOutOfRangeException(nameof(depth), depth, "HEVC streams here are 8, 10 or 12 bits.");
        }

        var caps = new CuvidDecodeCaps { CodecType = CuvidCodec.Hevc, ChromaFormat = CuvidChromaFormat.Yuv444, BitDepthMinus8 = (uint)(depth - 8) };
        Context.MakeCurrent();
        Check.Nvcuvid(Interop.Nvcuvid.GetDecoderCaps(&caps));
        return new NvdecCapabilities(depth, caps.IsSupported != 0, caps.NumNvdecs, caps.MinWidth, caps.MinHeight, (int)caps.MaxWidth, (int)caps.MaxHeight, caps.OutputFormatMask);
    }

    public void Dispose()
    {
        if (_ownsContext)
        {
            Context.Dispose();
        }
    }
}
