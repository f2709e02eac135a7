using System.Runtime.InteropServices;

namespace KvFetcher.Cuda.Native;

/// <summary>A retained primary context of one device; releasing it drops the retain.</summary>
internal sealed unsafe class SafeCudaContextHandle : SafeHandle
{
    public SafeCudaContextHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    /// <summary>The device ordinal the context belongs to.</summary>
    public int Device { get; private set; }

    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <summary>Retains the primary context of <paramref name="device"/>.</summary>
    public static SafeCudaContextHandle RetainPrimary(int device)
    {
        IntPtr context;
        Check.Cuda(Interop.Cuda.cuDevicePrimaryCtxRetain(&context, device));
        var result = new SafeCudaContextHandle { Device = device };
        result.SetHandle(context);
        return result;
    }

    protected override bool ReleaseHandle()
    {
        // No error checks on the release path: there is nobody to report to (a finalizer, or Dispose).
        _ = Interop.Cuda.cuDevicePrimaryCtxRelease(Device);
        return true;
    }
}

/// <summary>
/// A resource that lives in a context (memory, stream, event, module, cuBLAS handle): it keeps its context alive and
/// makes it current while it frees itself, so it may be released on any thread (including the finalizer's).
/// </summary>
internal abstract unsafe class SafeCudaChildHandle : SafeHandle
{
    private SafeCudaContextHandle? _context;

    protected SafeCudaChildHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <summary>Takes ownership of <paramref name="value"/>, created in <paramref name="context"/>.</summary>
    protected void Attach(SafeCudaContextHandle context, IntPtr value)
    {
        bool added = false;
        context.DangerousAddRef(ref added);
        _context = context;
        SetHandle(value);
    }

    protected sealed override bool ReleaseHandle()
    {
        SafeCudaContextHandle? context = _context;
        if (context is null)
        {
            return true;
        }

        if (Interop.Cuda.cuCtxPushCurrent(context.DangerousGetHandle()) == CudaResult.Success)
        {
            Free(handle);
            IntPtr popped;
            _ = Interop.Cuda.cuCtxPopCurrent(&popped);
        }

        context.DangerousRelease();
        _context = null;
        return true;
    }

    /// <summary>Frees the native resource; the owning context is current.</summary>
    protected abstract void Free(IntPtr value);
}

/// <summary>Device memory from <c>cuMemAlloc</c>.</summary>
internal sealed unsafe class SafeDeviceMemoryHandle : SafeCudaChildHandle
{
    public static SafeDeviceMemoryHandle Allocate(SafeCudaContextHandle context, long bytes)
    {
        ulong pointer;
        Check.Cuda(Interop.Cuda.cuMemAlloc(&pointer, (nuint)bytes));
        var result = new SafeDeviceMemoryHandle();
        result.Attach(context, checked((IntPtr)(long)pointer));
        return result;
    }

    protected override void Free(IntPtr value) => _ = Interop.Cuda.cuMemFree((ulong)(long)value);
}

/// <summary>Page-locked host memory from <c>cuMemAllocHost</c> (fast, asynchronous transfers).</summary>
internal sealed unsafe class SafePinnedMemoryHandle : SafeCudaChildHandle
{
    public static SafePinnedMemoryHandle Allocate(SafeCudaContextHandle context, long bytes)
    {
        void* pointer;
        Check.Cuda(Interop.Cuda.cuMemAllocHost(&pointer, (nuint)bytes));
        var result = new SafePinnedMemoryHandle();
        result.Attach(context, (IntPtr)pointer);
        return result;
    }

    protected override void Free(IntPtr value) => _ = Interop.Cuda.cuMemFreeHost((void*)value);
}

/// <summary>A stream from <c>cuStreamCreate</c>.</summary>
internal sealed unsafe class SafeCudaStreamHandle : SafeCudaChildHandle
{
    public static SafeCudaStreamHandle Create(SafeCudaContextHandle context, uint flags)
    {
        IntPtr stream;
        Check.Cuda(Interop.Cuda.cuStreamCreate(&stream, flags));
        var result = new SafeCudaStreamHandle();
        result.Attach(context, stream);
        return result;
    }

    protected override void Free(IntPtr value) => _ = Interop.Cuda.cuStreamDestroy(value);
}

/// <summary>An event from <c>cuEventCreate</c>.</summary>
internal sealed unsafe class SafeCudaEventHandle : SafeCudaChildHandle
{
    public static SafeCudaEventHandle Create(SafeCudaContextHandle context, uint flags)
    {
        IntPtr cudaEvent;
        Check.Cuda(Interop.Cuda.cuEventCreate(&cudaEvent, flags));
        var result = new SafeCudaEventHandle();
        result.Attach(context, cudaEvent);
        return result;
    }

    protected override void Free(IntPtr value) => _ = Interop.Cuda.cuEventDestroy(value);
}

/// <summary>A module loaded from a cubin or PTX image.</summary>
internal sealed unsafe class SafeCudaModuleHandle : SafeCudaChildHandle
{
    public static SafeCudaModuleHandle Load(SafeCudaContextHandle context, ReadOnlySpan<byte> image)
    {
        IntPtr module;
        fixed (byte* data = image)
        {
            Check.Cuda(Interop.Cuda.cuModuleLoadData(&module, data));
        }

        var result = new SafeCudaModuleHandle();
        result.Attach(context, module);
        return result;
    }

    protected override void Free(IntPtr value) => _ = Interop.Cuda.cuModuleUnload(value);
}

/// <summary>A cuBLAS handle (it holds the context's workspace).</summary>
internal sealed unsafe class SafeCublasHandle : SafeCudaChildHandle
{
    public static SafeCublasHandle Create(SafeCudaContextHandle context)
    {
        IntPtr blas;
        Check.Cublas(Interop.Cublas.cublasCreate(&blas));
        var result = new SafeCublasHandle();
        result.Attach(context, blas);
        return result;
    }

    protected override void Free(IntPtr value) => _ = Interop.Cublas.cublasDestroy(value);
}
