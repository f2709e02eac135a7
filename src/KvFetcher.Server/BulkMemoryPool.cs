using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Microsoft.AspNetCore.Connections;

namespace KvFetcher.Server;

/// <summary>
/// Kestrel's memory pool for the store server: pinned blocks of <see cref="BlockSize"/> bytes instead of Kestrel's 4 KiB.
/// The socket transport receives into one pool block per read, so with 4 KiB blocks an 8 MB PUT body took 2,048
/// <c>recv</c> calls (and as many zero-byte waits), and a GET's response went out in as many pipe segments. Objects
/// here are 1-32 MB, so fewer, larger reads and sends are what moves the bytes; idle connections hold no block (the
/// transport waits for data before it rents one).
/// </summary>
internal sealed class BulkMemoryPool : MemoryPool<byte>
{
    /// <summary>64 KiB per socket read: 16 times Kestrel's, and what a TCP receive typically has ready at once.</summary>
    public const int BlockSize = 64 << 10;

    private readonly ConcurrentQueue<Block> _free = new();
    private readonly int _maxPooled;
    private int _pooled;
    private int _disposed;

    /// <param name="maxPooledBytes">What the pool keeps for reuse; blocks returned beyond it go to the GC.</param>
    public BulkMemoryPool(long maxPooledBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxPooledBytes);
        _maxPooled = (int)Math.Min(int.MaxValue, maxPooledBytes / BlockSize);
    }

    public override int MaxBufferSize => BlockSize;

    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(minBufferSize, BlockSize);
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (_free.TryDequeue(out Block? block))
        {
            Interlocked.Decrement(ref _pooled);
            block.Lease();
            return block;
        }

        return new Block(this);
    }

    protected override void Dispose(bool disposing)
    {
        Interlocked.Exchange(ref _disposed, 1);
        _free.Clear();
    }

    private void Return(Block block)
    {
        if (_disposed == 0 && Interlocked.Increment(ref _pooled) <= _maxPooled)
        {
            _free.Enqueue(block);
            return;
        }

        Interlocked.Decrement(ref _pooled);
    }

    private sealed class Block : IMemoryOwner<byte>
    {
        private readonly BulkMemoryPool _pool;
        private int _leased = 1;

        public Block(BulkMemoryPool pool)
        {
            _pool = pool;
            Memory = MemoryMarshal.CreateFromPinnedArray(GC.AllocateUninitializedArray<byte>(BlockSize, pinned: true), 0, BlockSize);
        }

        public Memory<byte> Memory { get; }

        public void Lease() => Volatile.Write(ref _leased, 1);

        public void Dispose()
        {
            // Returned once per lease, however often its owner disposes it.
            if (Interlocked.Exchange(ref _leased, 0) == 1)
            {
                _pool.Return(this);
            }
        }
    }

    /// <summary>What Kestrel's transports ask for their pools (<see cref="IMemoryPoolFactory{T}"/>, ASP.NET Core 10).</summary>
    internal sealed class Factory(long maxPooledBytesPerPool) : IMemoryPoolFactory<byte>
    {
        public MemoryPool<byte> Create(MemoryPoolOptions? options = null) => new BulkMemoryPool(maxPooledBytesPerPool);
    }
}
