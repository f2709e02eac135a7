namespace KvFetcher.Cuda;

/// <summary>A CUDA driver, cuBLAS, NVRTC or NVDECODE call failed; the message names the call and the status.</summary>
public class CudaException : Exception
{
    public CudaException()
    {
    }

    public CudaException(string message)
        : base(message)
    {
    }

    public CudaException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    internal CudaException(string library, string call, int status, string statusName, string? detail)
        : base($"{library} call {call} failed: {statusName} ({status}){(string.IsNullOrEmpty(detail) ? "" : ": " + detail)}")
    {
        Library = library;
        Call = call;
        Status = status;
        StatusName = statusName;
    }

    /// <summary>"CUDA driver", "cuBLAS", "NVRTC" or "NVDECODE".</summary>
    public string Library { get; } = "";

    /// <summary>The failing call as written in the source.</summary>
    public string Call { get; } = "";

    /// <summary>The numeric status the call returned.</summary>
    public int Status { get; }

    /// <summary>The status's name, e.g. <c>CUDA_ERROR_OUT_OF_MEMORY</c>.</summary>
    public string StatusName { get; } = "";
}

/// <summary>No usable CUDA device: a library is missing, there is no GPU, or the driver cannot start.</summary>
public sealed class CudaUnavailableException : CudaException
{
    public CudaUnavailableException()
    {
    }

    public CudaUnavailableException(string message)
        : base(message)
    {
    }

    public CudaUnavailableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
