namespace KvFetcher.Cuda.Nvdec;

/// <summary>
/// A CUDA driver or NVDECODE call failed: the message names the call and the CUDA status (e.g.
/// <c>cuvidCreateDecoder(...) failed: CUDA_ERROR_OUT_OF_MEMORY (2)</c>). Streams that do not decode raise
/// <see cref="KvFetcher.Core.InvalidKvDataException"/> instead.
/// </summary>
public sealed class NvdecException : Exception
{
    public NvdecException()
    {
    }

    public NvdecException(string message)
        : base(message)
    {
    }

    public NvdecException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    internal NvdecException(string call, int status, string statusName)
        : base($"{call} failed: {statusName} ({status}).")
    {
        Call = call;
        Status = status;
    }

    /// <summary>The native call that failed, as written at the call site.</summary>
    public string Call { get; } = "";

    /// <summary>The CUresult it returned.</summary>
    public int Status { get; }
}
