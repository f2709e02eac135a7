using System.Buffers;
using KvFetcher.Fetch.Restoring;

namespace KvFetcher.Fetch.Fetching;

/// <summary>
/// One chunk in flight: a buffer the store writes the container into and the restorer's state the chunk is decoded
/// into (<see cref="IRestoreSlot"/>).
/// A request rents a fixed set of slots (its memory cap) and cycles them: nothing is allocated per chunk.
/// </summary>
internal sealed class ChunkSlot : IBufferWriter<byte>, IDisposable
{
    private byte[] _container;
    private int _written;

    public ChunkSlot(int containerCapacity, IRestoreSlot decoded)
    {
        _container = ArrayPool<byte>.Shared.Rent(containerCapacity);
        Decoded = decoded;
    }

    public int Chunk { get; private set; }

    public KvVariant Variant { get; private set; }

    /// <summary>When the transfer started (Stopwatch timestamp) and how many transfers ran then.</summary>
    public long TransferStart { get; set; }

    public ReadOnlyMemory<byte> Container => _container.AsMemory(0, _written);

    /// <summary>The chunk decoded, until it is restored.</summary>
    public IRestoreSlot Decoded { get; }

    public void Reset(int chunk, KvVariant variant)
    {
        Chunk = chunk;
        Variant = variant;
        _written = 0;
    }

    public void Advance(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, _container.Length - _written);
        _written += count;
    }

    public Memory<byte> GetMemory(int sizeHint = 0) => _container.AsMemory(_written, Room(sizeHint));

    public Span<byte> GetSpan(int sizeHint = 0) => _container.AsSpan(_written, Room(sizeHint));

    public void Dispose()
    {
        ArrayPool<byte>.Shared.Return(_container);
        _container = [];
        Decoded.Dispose();
    }

    private int Room(int sizeHint)
    {
        int room = _container.Length - _written;
        if (sizeHint > room)
        {
            // An object larger than any container of this chunk's shape can be: refuse it (the chunk is recomputed).
            throw new InvalidDataException($"A stored object needs {_written + sizeHint} bytes; containers of this chunk are at most {_container.Length}.");
        }

        return Math.Max(room, 0);
    }
}
