using System.Buffers;

namespace KvFetcher.Server;

/// <summary>
/// A growable buffer rented from <see cref="ArrayPool{T}.Shared"/> for one response body: the store verifies an object
/// into it before a byte is sent. Returned to the pool by <see cref="Dispose"/>, which the handler calls only once the
/// response write that reads it has completed.
/// </summary>
internal sealed class PooledBodyBuffer : IBufferWriter<byte>, IDisposable
{
    private byte[] _array = [];
    private int _written;

    public ReadOnlyMemory<byte> WrittenMemory => _array.AsMemory(0, _written);

    public void Advance(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, _array.Length - _written);
        _written += count;
    }

    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        Ensure(Math.Max(sizeHint, 1));
        return _array.AsMemory(_written);
    }

    public Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;

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

    private void Ensure(int sizeHint)
    {
        if (_array.Length - _written >= sizeHint)
        {
            return;
        }

        byte[] larger = ArrayPool<byte>.Shared.Rent(checked(_written + sizeHint));
        _array.AsSpan(0, _written).CopyTo(larger);
        byte[] old = _array;
        _array = larger;
        if (old.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(old);
        }
    }
}
