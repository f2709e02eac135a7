using System.Runtime.InteropServices;

namespace KvFetcher.Cuda.Nvdec.Native;

/// <summary>
/// The few CUDA driver API entry points (libcuda.so.1) the NVDEC decoder needs: device, primary context, stream,
/// device memory and copies. Private to the decoder until it moves onto the engine backend's shared bindings.
/// </summary>
internal static unsafe partial class Interop
{
    internal static partial class CudaDriver
    {
        public const string Library = "libcuda.so.1";

        public const int Success = 0;

        /// <summary>CUDA_ERROR_NOT_SUPPORTED.</summary>
        public const int NotSupported = 801;

        /// <summary>CU_STREAM_NON_BLOCKING: the stream does not synchronize with the legacy default stream.</summary>
        public const uint StreamNonBlocking = 1;

        [LibraryImport(Library, EntryPoint = "cuInit")]
        public static partial int Init(uint flags);

        [LibraryImport(Library, EntryPoint = "cuDeviceGetCount")]
        public static partial int DeviceGetCount(int* count);

        [LibraryImport(Library, EntryPoint = "cuDeviceGet")]
        public static partial int DeviceGet(int* device, int ordinal);

        [LibraryImport(Library, EntryPoint = "cuDeviceGetName")]
        public static partial int DeviceGetName(byte* name, int length, int device);

        [LibraryImport(Library, EntryPoint = "cuDevicePrimaryCtxRetain")]
        public static partial int DevicePrimaryCtxRetain(IntPtr* context, int device);

        [LibraryImport(Library, EntryPoint = "cuDevicePrimaryCtxRelease_v2")]
        public static partial int DevicePrimaryCtxRelease(int device);

        [LibraryImport(Library, EntryPoint = "cuCtxPushCurrent_v2")]
        public static partial int CtxPushCurrent(IntPtr context);

        [LibraryImport(Library, EntryPoint = "cuCtxPopCurrent_v2")]
        public static partial int CtxPopCurrent(IntPtr* context);

        [LibraryImport(Library, EntryPoint = "cuStreamCreate")]
        public static partial int StreamCreate(IntPtr* stream, uint flags);

        [LibraryImport(Library, EntryPoint = "cuStreamDestroy_v2")]
        public static partial int StreamDestroy(IntPtr stream);

        [LibraryImport(Library, EntryPoint = "cuStreamSynchronize")]
        public static partial int StreamSynchronize(IntPtr stream);

        [LibraryImport(Library, EntryPoint = "cuMemAlloc_v2")]
        public static partial int MemAlloc(ulong* devicePointer, nuint bytes);

        [LibraryImport(Library, EntryPoint = "cuMemFree_v2")]
        public static partial int MemFree(ulong devicePointer);

        [LibraryImport(Library, EntryPoint = "cuMemcpy2DAsync_v2")]
        public static partial int Memcpy2DAsync(CudaMemcpy2D* copy, IntPtr stream);

        [LibraryImport(Library, EntryPoint = "cuMemcpyDtoH_v2")]
        public static partial int MemcpyDtoH(void* destination, ulong source, nuint bytes);

        [LibraryImport(Library, EntryPoint = "cuMemcpyHtoD_v2")]
        public static partial int MemcpyHtoD(ulong destination, void* source, nuint bytes);

        [LibraryImport(Library, EntryPoint = "cuGetErrorName")]
        public static partial int GetErrorName(int status, byte** name);
    }
}
