using KvFetcher.Cuda.Nvdec.Native;
using CudaApi = KvFetcher.Cuda.Native.Interop.Cuda;

namespace KvFetcher.Cuda.Nvdec;

/// <summary>
/// GPU memory that <see cref="NvdecDecoder.DecodeToDevice"/> writes decoded planes into, packed like the host planes
/// (frame f, plane p at <c>(f * 3 + p) * width * height</c> samples) but with 10- and 12-bit samples as NVDEC writes
/// them: 16-bit words holding the value in their high bits (value &lt;&lt; (16 - depth)); a restore kernel shifts them
/// down as it dequantizes.
/// </summary>
public sealed unsafe class NvdecDeviceBuffer : IDisposable
{
    private readonly NvdecDevice _device;
    private readonly CudaDeviceMemoryHandle _memory;

    /// <summary>Allocates <paramref name="bytes"/> bytes of device memory on <paramref name="device"/>.</summary>
    public NvdecDeviceBuffer(NvdecDevice device, long bytes)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentOutOfRangeException.ThrowIfLessThan(bytes, 1);
        _device = device;
        using (device.Enter())
        {
            _memory = CudaDeviceMemoryHandle.Allocate(device.Context, bytes);
        }

        Length = bytes;
    }

    /// <summary>The buffer's size in bytes.</summary>
    public long Length { get; }

    /// <summary>The buffer's CUDA device address (a CUdeviceptr), for kernels that read the planes.</summary>
    public ulong DeviceAddress
    {
        get
        {
            ObjectDisposedException.ThrowIf(_memory.IsClosed, this);
            return _memory.Address;
        }
    }

    internal NvdecDevice Device => _device;

    /// <summary>Copies the first <c>destination.Length</c> bytes to the host (synchronously; decoders finish writing before their decode call returns).</summary>
    public void CopyTo(Span<byte> destination)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(destination.Length, Length, nameof(destination));
        if (destination.IsEmpty)
        {
            return;
        }

        using (_device.Enter())
        {
            fixed (byte* host = destination)
            {
                CudaStatus.Check((int)CudaApi.cuMemcpyDtoH(host, DeviceAddress, (nuint)destination.Length));
            }
        }
    }

    public void Dispose() => _memory.Dispose();
}
