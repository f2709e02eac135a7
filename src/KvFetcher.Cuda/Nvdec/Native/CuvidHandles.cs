using Microsoft.Win32.SafeHandles;
using CudaApi = KvFetcher.Cuda.Native.Interop.Cuda;

namespace KvFetcher.Cuda.Nvdec.Native;

/// <summary>A retained primary context of one device (shared with every other user of that device in the process).</summary>
internal sealed unsafe class CudaPrimaryContextHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    private readonly int _device;

    private CudaPrimaryContextHandle(IntPtr context, int device)
        : base(ownsHandle: true)
    {
        SetHandle(context);
        _device = device;
    }

    /// <summary>Retains the primary context of device <paramref name="device"/> (a CUdevice from cuDeviceGet).</summary>
    public static CudaPrimaryContextHandle Retain(int device)
    {
        IntPtr context;
        CudaStatus.Check((int)CudaApi.cuDevicePrimaryCtxRetain(&context, device));
        return new CudaPrimaryContextHandle(context, device);
    }

    protected override bool ReleaseHandle() => (int)CudaApi.cuDevicePrimaryCtxRelease(_device) == CudaStatus.Success;
}

/// <summary>
/// A resource that belongs to a CUDA context: keeps the context alive while it lives and makes it current while it is
/// freed (no error checks on that path: a failing free during shutdown has no one to report to).
/// </summary>
internal abstract unsafe class CudaContextBoundHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    private readonly CudaPrimaryContextHandle _context;

    protected CudaContextBoundHandle(IntPtr value, CudaPrimaryContextHandle context)
        : base(ownsHandle: true)
    {
        bool added = false;
        context.DangerousAddRef(ref added);
        _context = context;
        SetHandle(value);
    }

    protected override bool ReleaseHandle()
    {
        IntPtr popped;
        bool pushed = (int)CudaApi.cuCtxPushCurrent(_context.DangerousGetHandle()) == CudaStatus.Success;
        bool freed = Free(handle);
        if (pushed)
        {
            _ = (int)CudaApi.cuCtxPopCurrent(&popped);
        }

        _context.DangerousRelease();
        return freed;
    }

    protected abstract bool Free(IntPtr value);
}

/// <summary>A CUDA stream.</summary>
internal sealed unsafe class CudaStreamHandle : CudaContextBoundHandle
{
    private CudaStreamHandle(IntPtr stream, CudaPrimaryContextHandle context)
        : base(stream, context)
    {
    }

    /// <summary>Creates a non-blocking stream in <paramref name="context"/>, which must be current.</summary>
    public static CudaStreamHandle Create(CudaPrimaryContextHandle context)
    {
        IntPtr stream;
        CudaStatus.Check((int)CudaApi.cuStreamCreate(&stream, CudaApi.StreamNonBlocking));
        return new CudaStreamHandle(stream, context);
    }

    protected override bool Free(IntPtr value) => (int)CudaApi.cuStreamDestroy(value) == CudaStatus.Success;
}

/// <summary>Device memory from cuMemAlloc.</summary>
internal sealed unsafe class CudaDeviceMemoryHandle : CudaContextBoundHandle
{
    private CudaDeviceMemoryHandle(ulong pointer, CudaPrimaryContextHandle context)
        : base(new IntPtr(unchecked((long)pointer)), context)
    {
    }

    public ulong Address => (ulong)(long)handle;

    /// <summary>Allocates <paramref name="bytes"/> in <paramref name="context"/>, which must be current.</summary>
    public static CudaDeviceMemoryHandle Allocate(CudaPrimaryContextHandle context, long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bytes, 1);
        ulong pointer;
        CudaStatus.Check((int)CudaApi.cuMemAlloc(&pointer, (nuint)bytes));
        return new CudaDeviceMemoryHandle(pointer, context);
    }

    protected override bool Free(IntPtr value) => (int)CudaApi.cuMemFree((ulong)(long)value) == CudaStatus.Success;
}

/// <summary>An NVDEC decoder (cuvidCreateDecoder).</summary>
internal sealed unsafe class CuvidDecoderHandle : CudaContextBoundHandle
{
    private CuvidDecoderHandle(IntPtr decoder, CudaPrimaryContextHandle context)
        : base(decoder, context)
    {
    }

    /// <summary>Creates a decoder for <paramref name="info"/>; <paramref name="context"/> must be current.</summary>
    public static CuvidDecoderHandle Create(CudaPrimaryContextHandle context, ref CuvidDecodeCreateInfo info)
    {
        IntPtr decoder;
        fixed (CuvidDecodeCreateInfo* pointer = &info)
        {
            CudaStatus.Check(Interop.Nvcuvid.CreateDecoder(&decoder, pointer));
        }

        return new CuvidDecoderHandle(decoder, context);
    }

    protected override bool Free(IntPtr value) => Interop.Nvcuvid.DestroyDecoder(value) == CudaStatus.Success;
}

/// <summary>An NVDEC bitstream parser (cuvidCreateVideoParser).</summary>
internal sealed class CuvidParserHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public CuvidParserHandle()
        : base(ownsHandle: true)
    {
    }

    protected override bool ReleaseHandle() => Interop.Nvcuvid.DestroyVideoParser(handle) == CudaStatus.Success;
}

/// <summary>An NVDEC context lock (cuvidCtxLockCreate): serializes the decoder's use of its CUDA context.</summary>
internal sealed class CuvidContextLockHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public CuvidContextLockHandle()
        : base(ownsHandle: true)
    {
    }

    protected override bool ReleaseHandle() => Interop.Nvcuvid.CtxLockDestroy(handle) == CudaStatus.Success;
}
