using KvFetcher.Cuda.Native;

namespace KvFetcher.Cuda.Gpu;

/// <summary>Page-locked host memory for asynchronous transfers; an explicit disposable scope.</summary>
internal sealed unsafe class PinnedBuffer : IDisposable
{
    private readonly SafePinnedMemoryHandle _memory;

    public PinnedBuffer(SafePinnedMemoryHandle memory, long length)
    {
        _memory = memory;
        Length = length;
    }

    public long Length { get; }

    public void* Pointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(_memory.IsClosed, this);
            return (void*)_memory.DangerousGetHandle();
        }
    }

    public Span<T> AsSpan<T>()
        where T : unmanaged => new(Pointer, checked((int)(Length / sizeof(T))));

    public void Dispose() => _memory.Dispose();
}
