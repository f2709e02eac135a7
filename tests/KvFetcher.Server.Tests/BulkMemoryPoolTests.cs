using System.Buffers;

namespace KvFetcher.Server.Tests;

/// <summary>The store server's Kestrel pool: 64 KiB blocks, reused, each lease returned once, bounded.</summary>
public sealed class BulkMemoryPoolTests
{
    [Fact]
    public void Rent_AfterReturn_SameBlockAgainAndDoubleDisposeReturnsItOnce()
    {
        using var pool = new BulkMemoryPool(maxPooledBytes: 4L * BulkMemoryPool.BlockSize);
        IMemoryOwner<byte> first = pool.Rent(4096);
        Assert.Equal(BulkMemoryPool.BlockSize, first.Memory.Length);
        Memory<byte> block = first.Memory;
        first.Dispose();
        first.Dispose(); // a second dispose of one lease must not pool the block twice

        IMemoryOwner<byte> again = pool.Rent();
        IMemoryOwner<byte> other = pool.Rent();
        Assert.True(again.Memory.Span == block.Span, "a returned block was not reused");
        Assert.False(other.Memory.Span == block.Span, "one block was handed out twice");
        again.Dispose();
        other.Dispose();
    }

    [Fact]
    public void Return_BeyondTheBound_BlocksLeftToTheGc()
    {
        using var pool = new BulkMemoryPool(maxPooledBytes: BulkMemoryPool.BlockSize);
        IMemoryOwner<byte> a = pool.Rent();
        IMemoryOwner<byte> b = pool.Rent();
        Memory<byte> aBlock = a.Memory;
        a.Dispose();
        b.Dispose(); // over the bound: not kept

        IMemoryOwner<byte> first = pool.Rent();
        IMemoryOwner<byte> second = pool.Rent();
        Assert.True(first.Memory.Span == aBlock.Span);
        Assert.False(second.Memory.Span == aBlock.Span);
        first.Dispose();
        second.Dispose();
    }

    [Fact]
    public void Rent_LargerThanABlockOrAfterDispose_Refused()
    {
        var pool = new BulkMemoryPool(maxPooledBytes: 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Rent(BulkMemoryPool.BlockSize + 1));
        pool.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.Rent());
    }
}
