using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using CudaApi = KvFetcher.Cuda.Native.Interop.Cuda;

namespace KvFetcher.Cuda.Nvdec.Native;

/// <summary>Turns CUresult codes into <see cref="NvdecException"/>s that name the failing call.</summary>
internal static unsafe class CudaStatus
{
    /// <summary>CUDA_SUCCESS.</summary>
    public const int Success = 0;

    /// <summary>CUDA_ERROR_NOT_SUPPORTED.</summary>
    public const int NotSupported = 801;

    /// <summary>Throws unless <paramref name="status"/> is CUDA_SUCCESS; the message carries the call's source text.</summary>
    public static void Check(int status, [CallerArgumentExpression(nameof(status))] string call = "")
    {
        if (status != CudaStatus.Success)
        {
            Throw(status, call);
        }
    }

    /// <summary>The CUDA_ERROR_* name of <paramref name="status"/>, or its number where the driver has no name for it.</summary>
    public static string Name(int status)
    {
        byte* name = null;
        return (int)CudaApi.cuGetErrorName((KvFetcher.Cuda.Native.CudaResult)status, &name) == CudaStatus.Success && name is not null
            ? Marshal.PtrToStringUTF8((IntPtr)name) ?? $"CUresult {status}"
            : $"CUresult {status}";
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Throw(int status, string call) => throw new NvdecException(call, status, Name(status));
}
