using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace KvFetcher.Cuda.Native;

/// <summary>Status checks for native calls: a failure becomes a <see cref="CudaException"/> naming the call.</summary>
internal static unsafe class Check
{
    [StackTraceHidden]
    public static void Cuda(CudaResult result, [CallerArgumentExpression(nameof(result))] string call = "")
    {
        if (result != CudaResult.Success)
        {
            ThrowCuda(result, call, "CUDA driver");
        }
    }

    /// <summary>An NVDECODE call (they return CUresult codes too): the exception names the library as NVDECODE.</summary>
    [StackTraceHidden]
    public static void Nvcuvid(CudaResult result, [CallerArgumentExpression(nameof(result))] string call = "")
    {
        if (result != CudaResult.Success)
        {
            ThrowCuda(result, call, "NVDECODE");
        }
    }

    [StackTraceHidden]
    public static void Cublas(CublasStatus status, [CallerArgumentExpression(nameof(status))] string call = "")
    {
        if (status != CublasStatus.Success)
        {
            ThrowCublas(status, call);
        }
    }

    [StackTraceHidden]
    public static void Nvrtc(NvrtcResult result, [CallerArgumentExpression(nameof(result))] string call = "", string? log = null)
    {
        if (result != NvrtcResult.Success)
        {
            ThrowNvrtc(result, call, log);
        }
    }

    /// <summary>The name of a driver status, e.g. CUDA_ERROR_OUT_OF_MEMORY.</summary>
    public static string CudaName(CudaResult result)
    {
        byte* name = null;
        return Interop.Cuda.cuGetErrorName(result, &name) == CudaResult.Success && name != null
            ? Marshal.PtrToStringUTF8((IntPtr)name) ?? result.ToString()
            : $"CUresult {(int)result}";
    }

    [DoesNotReturn]
    private static void ThrowCuda(CudaResult result, string call, string library)
    {
        byte* text = null;
        string? detail = Interop.Cuda.cuGetErrorString(result, &text) == CudaResult.Success && text != null
            ? Marshal.PtrToStringUTF8((IntPtr)text)
            : null;
        throw new CudaException(library, call, (int)result, CudaName(result), detail);
    }

    [DoesNotReturn]
    private static void ThrowCublas(CublasStatus status, string call)
    {
        byte* text = Interop.Cublas.cublasGetStatusString(status);
        string name = text != null ? Marshal.PtrToStringUTF8((IntPtr)text) ?? "" : $"cublasStatus {(int)status}";
        throw new CudaException("cuBLAS", call, (int)status, name, null);
    }

    [DoesNotReturn]
    private static void ThrowNvrtc(NvrtcResult result, string call, string? log)
    {
        byte* text = Interop.Nvrtc.nvrtcGetErrorString(result);
        string name = text != null ? Marshal.PtrToStringUTF8((IntPtr)text) ?? "" : $"nvrtcResult {(int)result}";
        throw new CudaException("NVRTC", call, (int)result, name, log);
    }
}
