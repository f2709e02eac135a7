using System.Diagnostics.CodeAnalysis;
using KvFetcher.Cuda.Native;

namespace KvFetcher.Cuda;

/// <summary>An ordered queue of device work (copies, kernels, matrix products).</summary>
[SuppressMessage("Naming", "CA1711:Identifiers should not have incorrect suffix", Justification = "CUDA's own name for the concept.")]
public sealed class CudaStream : IDisposable
{
    private readonly CudaContext _context;
    private readonly SafeCudaStreamHandle _stream;

    internal CudaStream(CudaContext context, SafeCudaStreamHandle stream)
    {
        _context = context;
        _stream = stream;
    }

    public CudaContext Context => _context;

    internal IntPtr Handle
    {
        get
        {
            ObjectDisposedException.ThrowIf(_stream.IsClosed, this);
            return _stream.DangerousGetHandle();
        }
    }

    /// <summary>Blocks until the stream's work is done; a failed kernel surfaces here as a <see cref="CudaException"/>.</summary>
    public void Synchronize()
    {
        _context.MakeCurrent();
        Check.Cuda(Interop.Cuda.cuStreamSynchronize(Handle));
    }

    public void Dispose() => _stream.Dispose();
}
