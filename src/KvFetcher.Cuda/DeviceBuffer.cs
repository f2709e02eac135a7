using KvFetcher.Cuda.Native;

namespace KvFetcher.Cuda;

/// <summary>A block of device memory. Copies here are synchronous with respect to the host.</summary>
public sealed unsafe class DeviceBuffer : IDisposable
{
    private readonly CudaContext _context;
    private readonly SafeDeviceMemoryHandle _memory;

    internal DeviceBuffer(CudaContext context, SafeDeviceMemoryHandle memory, long length)
    {
        _context = context;
        _memory = memory;
        Length = length;
    }

    /// <summary>Size in bytes.</summary>
    public long Length { get; }

    public CudaContext Context => _context;

    /// <summary>The device address, for kernels and native calls. Valid until <see cref="Dispose"/>.</summary>
    internal ulong Pointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(_memory.IsClosed, this);
            return (ulong)(long)_memory.DangerousGetHandle();
        }
    }

    /// <summary>Copies <paramref name="source"/> to the buffer at byte <paramref name="offset"/>.</summary>
    public void CopyFrom(ReadOnlySpan<byte> source, long offset = 0)
    {
        CheckRange(offset, source.Length);
        if (source.IsEmpty)
        {
            return;
        }

        _context.MakeCurrent();
        fixed (byte* data = source)
        {
            Check.Cuda(Interop.Cuda.cuMemcpyHtoD(Pointer + (ulong)offset, data, (nuint)source.Length));
        }
    }

    /// <summary>Copies bytes from the buffer at <paramref name="offset"/> to <paramref name="destination"/>.</summary>
    public void CopyTo(Span<byte> destination, long offset = 0)
    {
        CheckRange(offset, destination.Length);
        if (destination.IsEmpty)
        {
            return;
        }

        _context.MakeCurrent();
        fixed (byte* data = destination)
        {
            Check.Cuda(Interop.Cuda.cuMemcpyDtoH(data, Pointer + (ulong)offset, (nuint)destination.Length));
        }
    }

    public void Dispose() => _memory.Dispose();

    private void CheckRange(long offset, long count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if (offset + count > Length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"Bytes [{offset}, {offset + count}) exceed the buffer of {Length} bytes.");
        }
    }
}
