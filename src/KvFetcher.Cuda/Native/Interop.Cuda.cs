using System.Runtime.InteropServices;

namespace KvFetcher.Cuda.Native;

/// <summary>
/// The CUDA driver API (<c>libcuda.so.1</c>, installed with the NVIDIA driver). Only the calls the engine and the
/// decoders use; versioned entry points (<c>_v2</c>) are the ones <c>cuda.h</c> maps the plain names to.
/// </summary>
internal static unsafe partial class Interop
{
    internal static partial class Cuda
    {
        public const string Library = NativeLibraries.Cuda;

        /// <summary><c>CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT</c>.</summary>
        public const int AttributeMultiprocessorCount = 16;

        /// <summary><c>CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR</c>.</summary>
        public const int AttributeComputeCapabilityMajor = 75;

        /// <summary><c>CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR</c>.</summary>
        public const int AttributeComputeCapabilityMinor = 76;

        /// <summary><c>CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN</c>.</summary>
        public const int AttributeMaxSharedMemoryPerBlockOptin = 97;

        /// <summary><c>CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES</c>.</summary>
        public const int FunctionAttributeMaxDynamicSharedSizeBytes = 8;

        /// <summary><c>CU_STREAM_NON_BLOCKING</c>.</summary>
        public const uint StreamNonBlocking = 1;

        /// <summary><c>CU_EVENT_DISABLE_TIMING</c>.</summary>
        public const uint EventDisableTiming = 2;

        [LibraryImport(Library)]
        public static partial CudaResult cuInit(uint flags);

        [LibraryImport(Library)]
        public static partial CudaResult cuDriverGetVersion(int* version);

        [LibraryImport(Library)]
        public static partial CudaResult cuGetErrorName(CudaResult error, byte** name);

        [LibraryImport(Library)]
        public static partial CudaResult cuGetErrorString(CudaResult error, byte** text);

        [LibraryImport(Library)]
        public static partial CudaResult cuDeviceGetCount(int* count);

        [LibraryImport(Library)]
        public static partial CudaResult cuDeviceGet(int* device, int ordinal);

        [LibraryImport(Library)]
        public static partial CudaResult cuDeviceGetName(byte* name, int length, int device);

        [LibraryImport(Library)]
        public static partial CudaResult cuDeviceGetAttribute(int* value, int attribute, int device);

        [LibraryImport(Library, EntryPoint = "cuDeviceTotalMem_v2")]
        public static partial CudaResult cuDeviceTotalMem(nuint* bytes, int device);

        [LibraryImport(Library)]
        public static partial CudaResult cuDevicePrimaryCtxRetain(IntPtr* context, int device);

        [LibraryImport(Library, EntryPoint = "cuDevicePrimaryCtxRelease_v2")]
        public static partial CudaResult cuDevicePrimaryCtxRelease(int device);

        [LibraryImport(Library)]
        public static partial CudaResult cuCtxSetCurrent(IntPtr context);

        [LibraryImport(Library, EntryPoint = "cuCtxPushCurrent_v2")]
        public static partial CudaResult cuCtxPushCurrent(IntPtr context);

        [LibraryImport(Library, EntryPoint = "cuCtxPopCurrent_v2")]
        public static partial CudaResult cuCtxPopCurrent(IntPtr* context);

        [LibraryImport(Library)]
        public static partial CudaResult cuCtxSynchronize();

        [LibraryImport(Library, EntryPoint = "cuMemGetInfo_v2")]
        public static partial CudaResult cuMemGetInfo(nuint* free, nuint* total);

        [LibraryImport(Library, EntryPoint = "cuMemAlloc_v2")]
        public static partial CudaResult cuMemAlloc(ulong* pointer, nuint bytes);

        [LibraryImport(Library, EntryPoint = "cuMemFree_v2")]
        public static partial CudaResult cuMemFree(ulong pointer);

        [LibraryImport(Library, EntryPoint = "cuMemAllocHost_v2")]
        public static partial CudaResult cuMemAllocHost(void** pointer, nuint bytes);

        [LibraryImport(Library)]
        public static partial CudaResult cuMemFreeHost(void* pointer);

        [LibraryImport(Library, EntryPoint = "cuMemcpyHtoDAsync_v2")]
        public static partial CudaResult cuMemcpyHtoDAsync(ulong destination, void* source, nuint bytes, IntPtr stream);

        [LibraryImport(Library, EntryPoint = "cuMemcpyDtoHAsync_v2")]
        public static partial CudaResult cuMemcpyDtoHAsync(void* destination, ulong source, nuint bytes, IntPtr stream);

        [LibraryImport(Library, EntryPoint = "cuMemcpyDtoDAsync_v2")]
        public static partial CudaResult cuMemcpyDtoDAsync(ulong destination, ulong source, nuint bytes, IntPtr stream);

        [LibraryImport(Library, EntryPoint = "cuMemcpyHtoD_v2")]
        public static partial CudaResult cuMemcpyHtoD(ulong destination, void* source, nuint bytes);

        [LibraryImport(Library, EntryPoint = "cuMemcpyDtoH_v2")]
        public static partial CudaResult cuMemcpyDtoH(void* destination, ulong source, nuint bytes);

        [LibraryImport(Library)]
        public static partial CudaResult cuMemsetD8Async(ulong destination, byte value, nuint count, IntPtr stream);

        [LibraryImport(Library, EntryPoint = "cuMemcpy2DAsync_v2")]
        public static partial CudaResult cuMemcpy2DAsync(CudaMemcpy2D* copy, IntPtr stream);

        [LibraryImport(Library)]
        public static partial CudaResult cuStreamCreate(IntPtr* stream, uint flags);

        [LibraryImport(Library, EntryPoint = "cuStreamDestroy_v2")]
        public static partial CudaResult cuStreamDestroy(IntPtr stream);

        [LibraryImport(Library)]
        public static partial CudaResult cuStreamSynchronize(IntPtr stream);

        [LibraryImport(Library)]
        public static partial CudaResult cuStreamWaitEvent(IntPtr stream, IntPtr cudaEvent, uint flags);

        [LibraryImport(Library)]
        public static partial CudaResult cuEventCreate(IntPtr* cudaEvent, uint flags);

        [LibraryImport(Library, EntryPoint = "cuEventDestroy_v2")]
        public static partial CudaResult cuEventDestroy(IntPtr cudaEvent);

        [LibraryImport(Library)]
        public static partial CudaResult cuEventRecord(IntPtr cudaEvent, IntPtr stream);

        [LibraryImport(Library)]
        public static partial CudaResult cuEventSynchronize(IntPtr cudaEvent);

        [LibraryImport(Library)]
        public static partial CudaResult cuEventElapsedTime(float* milliseconds, IntPtr start, IntPtr end);

        [LibraryImport(Library)]
        public static partial CudaResult cuModuleLoadData(IntPtr* module, void* image);

        [LibraryImport(Library)]
        public static partial CudaResult cuModuleUnload(IntPtr module);

        [LibraryImport(Library)]
        public static partial CudaResult cuModuleGetFunction(IntPtr* function, IntPtr module, byte* name);

        [LibraryImport(Library)]
        public static partial CudaResult cuFuncSetAttribute(IntPtr function, int attribute, int value);

        [LibraryImport(Library)]
        public static partial CudaResult cuLaunchKernel(
            IntPtr function,
            uint gridX,
            uint gridY,
            uint gridZ,
            uint blockX,
            uint blockY,
            uint blockZ,
            uint sharedMemoryBytes,
            IntPtr stream,
            void** parameters,
            void** extra);
    }
}
