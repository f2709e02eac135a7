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

    /// <summary>The first layer fetched: 0 for the whole chunk, else the upper layers of a layer-addressable container.</summary>
    public int LayerStart { get; private set; }

    /// <summary>For a layer range: the container's checked head; its layers' bytes follow the head in <see cref="Container"/>.</summary>
    public Core.Containers.ChunkLayerTable? Table { get; set; }

    /// <summary>For a layer range: the bytes of the head before the layers' bytes in <see cref="Container"/>.</summary>
    public int HeadLength { get; set; }

    /// <summary>The transfer running into this slot now, or null (published for <see cref="ChunkFetcher.Abandon"/>).</summary>
    public TransferHandle? Transfer;

    public ReadOnlyMemory<byte> Container => _container.AsMemory(0, _written);

    /// <summary>The chunk decoded, until it is restored.</summary>
    public IRestoreSlot Decoded { get; }

    public void Reset(int chunk, KvVariant variant, int layerStart = 0)
    {
        Chunk = chunk;
        Variant = variant;
        LayerStart = layerStart;
        Table = null;
        HeadLength = 0;
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

/// <summary>One chunk's transfer: its deadline, and a way for the engine to cancel it when it takes the chunk back.</summary>
internal sealed class TransferHandle : IDisposable
{
    private readonly CancellationTokenSource _source;
    private volatile bool _abandoned;

    public TransferHandle(int chunk, CancellationToken stop)
    {
        Chunk = chunk;
        _source = CancellationTokenSource.CreateLinkedTokenSource(stop);
    }

    public int Chunk { get; }

    public CancellationToken Token => _source.Token;

    /// <summary>Whether the engine took the chunk back (rather than the deadline ending the transfer).</summary>
    public bool Abandoned => _abandoned;

    public void CancelAfter(TimeSpan delay) => _source.CancelAfter(delay);

    public void Abandon()
    {
        _abandoned = true;
        try
        {
            _source.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The transfer has just ended.
        }
    }

    public void Dispose() => _source.Dispose();
}
