using System.Buffers;

namespace KvFetcher.Fetch.Fetching;

/// <summary>
/// One chunk in flight: a buffer the store writes the container into and a buffer the codec decodes the KV into.
/// A request rents a fixed set of slots (its memory cap) and cycles them: nothing is allocated per chunk.
/// </summary>
internal sealed class ChunkSlot : IBufferWriter<byte>, IDisposable
{
    private byte[] _container;
    private byte[] _kv;
    private readonly int _kvBytes;
    private int _written;

    public ChunkSlot(int containerCapacity, int kvBytes)
    {
        _container = ArrayPool<byte>.Shared.Rent(containerCapacity);
        _kv = ArrayPool<byte>.Shared.Rent(kvBytes);
        _kvBytes = kvBytes;
    }

    public int Chunk { get; private set; }

    public KvVariant Variant { get; private set; }

    /// <summary>When the transfer started (Stopwatch timestamp) and how many transfers ran then.</summary>
    public long TransferStart { get; set; }

    public ReadOnlySpan<byte> Container => _container.AsSpan(0, _written);

    public Span<byte> Kv => _kv.AsSpan(0, _kvBytes);

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
        ArrayPool<byte>.Shared.Return(_kv);
        _container = [];
        _kv = [];
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
