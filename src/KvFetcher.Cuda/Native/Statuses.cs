namespace KvFetcher.Cuda.Native;

/// <summary><c>CUresult</c>: 0 is success; <see cref="CudaException"/> names the others through <c>cuGetErrorName</c>.</summary>
internal enum CudaResult
{
    Success = 0,
    InvalidValue = 1,
    OutOfMemory = 2,
    NotInitialized = 3,
    NoDevice = 100,
    InvalidDevice = 101,

    /// <summary>CUDA_ERROR_NOT_SUPPORTED: e.g. a driver whose NVDEC cannot report a picture's decode status.</summary>
    NotSupported = 801,
}

/// <summary><c>cublasStatus_t</c>.</summary>
internal enum CublasStatus
{
    Success = 0,
}

/// <summary><c>nvrtcResult</c>.</summary>
internal enum NvrtcResult
{
    Success = 0,
    CompilationFailed = 6,
}
