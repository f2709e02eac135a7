using System.Runtime.InteropServices;
using KvFetcher.Cuda.Gpu;
using KvFetcher.Cuda.Native;

namespace KvFetcher.Cuda;

/// <summary>
/// One CUDA device and its primary context (shared with every other user of the device in the process; the NVDEC
/// decoders use it too). Resources it creates keep it alive. Thread-safe: each call makes the context current on the
/// calling thread.
/// </summary>
public sealed unsafe class CudaContext : IDisposable
{
    /// <summary><c>CU_STREAM_NON_BLOCKING</c>.</summary>
    private const uint NonBlockingStream = 1;

    private readonly SafeCudaContextHandle _handle;

    private CudaContext(SafeCudaContextHandle handle, string name, int major, int minor, int multiprocessors, long totalMemory, int driverVersion, int sharedMemoryOptin)
    {
        _handle = handle;
        DeviceName = name;
        ComputeCapability = new Version(major, minor);
        MultiprocessorCount = multiprocessors;
        TotalMemory = totalMemory;
        DriverVersion = driverVersion;
        MaxSharedMemoryPerBlock = sharedMemoryOptin;
    }

    /// <summary>The device's ordinal.</summary>
    public int DeviceOrdinal => _handle.Device;

    /// <summary>The device's name, e.g. "NVIDIA H100 80GB HBM3".</summary>
    public string DeviceName { get; }

    /// <summary>The compute capability, e.g. 9.0 for an H100.</summary>
    public Version ComputeCapability { get; }

    /// <summary>Streaming multiprocessors on the device.</summary>
    public int MultiprocessorCount { get; }

    /// <summary>Device memory in bytes.</summary>
    public long TotalMemory { get; }

    /// <summary>The driver's CUDA version, e.g. 13000 for 13.0.</summary>
    public int DriverVersion { get; }

    /// <summary>The most dynamic shared memory a block may opt in to, in bytes.</summary>
    public int MaxSharedMemoryPerBlock { get; }

    internal SafeCudaContextHandle Handle => _handle;

    /// <summary>
    /// Whether a CUDA device can be used here: the driver, cuBLAS and NVRTC load, the driver starts and sees a device.
    /// Otherwise <paramref name="reason"/> says what is missing.
    /// </summary>
    public static bool IsAvailable(out string reason)
    {
        foreach (string library in new[] { NativeLibraries.Cuda, NativeLibraries.Cublas, NativeLibraries.Nvrtc })
        {
            if (!NativeLibraries.TryLoad(library, out string? problem))
            {
                reason = problem!;
                return false;
            }
        }

        CudaResult init = Interop.Cuda.cuInit(0);
        if (init != CudaResult.Success)
        {
            reason = $"The CUDA driver loaded but cuInit failed with {Check.CudaName(init)}: no usable GPU, or a driver/toolkit mismatch.";
            return false;
        }

        int count;
        if (Interop.Cuda.cuDeviceGetCount(&count) != CudaResult.Success || count == 0)
        {
            reason = "The CUDA driver reports no device.";
            return false;
        }

        reason = "";
        return true;
    }

    /// <summary>Opens device <paramref name="deviceOrdinal"/>.</summary>
    /// <exception cref="CudaUnavailableException">A library is missing or there is no such device.</exception>
    public static CudaContext Create(int deviceOrdinal = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(deviceOrdinal);
        if (!IsAvailable(out string reason))
        {
            throw new CudaUnavailableException(reason);
        }

        return Open(deviceOrdinal);
    }

    /// <summary>
    /// Opens device <paramref name="deviceOrdinal"/> with the driver alone (for users that need neither cuBLAS nor
    /// NVRTC, e.g. NVDEC); <see cref="Create"/> checks those first.
    /// </summary>
    internal static CudaContext Open(int deviceOrdinal)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(deviceOrdinal);
        Check.Cuda(Interop.Cuda.cuInit(0));
        int count;
        Check.Cuda(Interop.Cuda.cuDeviceGetCount(&count));
        if (deviceOrdinal >= count)
        {
            throw new CudaUnavailableException($"CUDA device {deviceOrdinal} does not exist; the driver sees {count}.");
        }

        int device;
        Check.Cuda(Interop.Cuda.cuDeviceGet(&device, deviceOrdinal));
        byte* name = stackalloc byte[256];
        Check.Cuda(Interop.Cuda.cuDeviceGetName(name, 256, device));
        int major, minor, multiprocessors, sharedMemory, driver;
        nuint totalMemory;
        Check.Cuda(Interop.Cuda.cuDeviceGetAttribute(&major, Interop.Cuda.AttributeComputeCapabilityMajor, device));
        Check.Cuda(Interop.Cuda.cuDeviceGetAttribute(&minor, Interop.Cuda.AttributeComputeCapabilityMinor, device));
        Check.Cuda(Interop.Cuda.cuDeviceGetAttribute(&multiprocessors, Interop.Cuda.AttributeMultiprocessorCount, device));
        Check.Cuda(Interop.Cuda.cuDeviceGetAttribute(&sharedMemory, Interop.Cuda.AttributeMaxSharedMemoryPerBlockOptin, device));
        Check.Cuda(Interop.Cuda.cuDeviceTotalMem(&totalMemory, device));
        Check.Cuda(Interop.Cuda.cuDriverGetVersion(&driver));
        SafeCudaContextHandle handle = SafeCudaContextHandle.RetainPrimary(device);
        var context = new CudaContext(
            handle, Marshal.PtrToStringUTF8((IntPtr)name) ?? "", major, minor, multiprocessors, (long)totalMemory, driver, sharedMemory);
        context.MakeCurrent();
        return context;
    }

    /// <summary>Allocates <paramref name="bytes"/> of device memory (contents undefined).</summary>
    public DeviceBuffer Allocate(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        MakeCurrent();
        return new DeviceBuffer(this, SafeDeviceMemoryHandle.Allocate(_handle, bytes), bytes);
    }

    /// <summary>
    /// A new stream whose work runs in order, concurrently with other streams; it is a blocking stream, so the
    /// synchronous copies of <see cref="DeviceBuffer"/> (legacy default stream) are ordered with it.
    /// </summary>
    public CudaStream CreateStream()
    {
        MakeCurrent();

        // Non-blocking: work on it never waits for synchronous copies on the legacy default stream (a decoder's check
        // copy, a table upload) and they never wait for it, so restores and decodes overlap the engine's steps.
        return new CudaStream(this, SafeCudaStreamHandle.Create(_handle, NonBlockingStream));
    }

    /// <summary>Free and total device memory in bytes.</summary>
    public (long Free, long Total) GetMemoryInfo()
    {
        MakeCurrent();
        nuint free, total;
        Check.Cuda(Interop.Cuda.cuMemGetInfo(&free, &total));
        return ((long)free, (long)total);
    }

    /// <summary>Waits for all work on the device.</summary>
    public void Synchronize()
    {
        MakeCurrent();
        Check.Cuda(Interop.Cuda.cuCtxSynchronize());
    }

    /// <summary>Makes the context current on the calling thread.</summary>
    internal void MakeCurrent()
    {
        ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
        Check.Cuda(Interop.Cuda.cuCtxSetCurrent(_handle.DangerousGetHandle()));
    }

    internal PinnedBuffer AllocatePinned(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        MakeCurrent();
        return new PinnedBuffer(SafePinnedMemoryHandle.Allocate(_handle, bytes), bytes);
    }

    public override string ToString() => $"{DeviceName} (device {DeviceOrdinal}, sm_{ComputeCapability.Major}{ComputeCapability.Minor}, {TotalMemory >> 20} MiB)";

    public void Dispose() => _handle.Dispose();
}
