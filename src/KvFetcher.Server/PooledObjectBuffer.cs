using System.Buffers;

namespace KvFetcher.Server;

/// <summary>
/// Where a GET's verified object lands before it is sent: one array from the shared pool, sized by the store's first
/// <see cref="GetMemory"/> (the disk store asks for the object's length), grown by doubling only for a store that writes
/// in pieces; returned to the pool on dispose. With the whole object in hand the handler sets Content-Length and writes
/// it once, so Kestrel streams it to the socket under back-pressure instead of holding the body until the handler ends.
/// </summary>
internal sealed class PooledObjectBuffer : IBufferWriter<byte>, IDisposable
{
    private byte[] _array = [];
    private int _written;

    /// <summary>The bytes written so far.</summary>
    public ReadOnlyMemory<byte> Written => _array.AsMemory(0, _written);

    public void Advance(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, _array.Length - _written);
        _written += count;
    }

    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        Reserve(sizeHint);
        return _array.AsMemory(_written);
    }

    public Span<byte> GetSpan(int sizeHint = 0)
    {
        Reserve(sizeHint);
        return _array.AsSpan(_written);
    }

    public void Dispose()
    {
        byte[] array = _array;
        _array = [];
        _written = 0;
        if (array.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(array);
        }
    }

    private void Reserve(int sizeHint)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(sizeHint);
        int needed = Math.Max(sizeHint, 1);
        if (_array.Length - _written >= needed)
        {
            return;
        }

        long size = Math.Max((long)_written + needed, Math.Min((long)_array.Length * 2, Array.MaxLength));
        byte[] larger = ArrayPool<byte>.Shared.Rent((int)Math.Min(size, Array.MaxLength));
        _array.AsSpan(0, _written).CopyTo(larger);
        byte[] old = _array;
        _array = larger;
        if (old.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(old);
        }
    }
}
