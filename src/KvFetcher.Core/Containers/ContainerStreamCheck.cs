using System.Buffers.Binary;
using System.IO.Hashing;

namespace KvFetcher.Core.Containers;

/// <summary>
/// Verifies a container of a known length whose bytes pass through in order, slice by slice (a server sending an
/// object while it reads it): every header check as soon as the first <see cref="ChunkContainer.HeaderSize"/> bytes
/// have passed, the checksum once the last byte has. The same checks as <see cref="ChunkContainer.IsIntact"/>, without
/// holding the container: a reader that sends bytes before <see cref="Complete"/> must treat a failure there as a
/// torn object (abort what it sent), never as a good one.
/// </summary>
public sealed class ContainerStreamCheck
{
    private readonly XxHash3 _hash = new();
    private readonly byte[] _head = new byte[ChunkContainer.HeaderSize];
    private readonly byte[] _stored = new byte[ChunkContainer.ChecksumSize];
    private readonly long _bodyEnd;
    private long _seen;

    /// <exception cref="InvalidKvDataException"><paramref name="length"/> is shorter than any container.</exception>
    public ContainerStreamCheck(long length)
    {
        ChunkContainer.CheckLength(length);
        Length = length;
        _bodyEnd = length - ChunkContainer.ChecksumSize;
    }

    /// <summary>The container's length in bytes.</summary>
    public long Length { get; }

    /// <summary>The header, once its bytes have passed and checked out; null before.</summary>
    public ChunkHeader? Header { get; private set; }

    /// <summary>Bytes passed so far.</summary>
    public long Seen => _seen;

    /// <summary>
    /// Takes the next <paramref name="slice"/>; checks the header when its last byte is in it.
    /// </summary>
    /// <exception cref="InvalidKvDataException">The header is malformed, or more bytes arrive than the length.</exception>
    public void Append(ReadOnlySpan<byte> slice)
    {
        if (slice.Length > Length - _seen)
        {
            throw ChunkContainer.Invalid("length", 0, _seen + slice.Length, $"more bytes than the {Length} announced");
        }

        if (_seen < ChunkContainer.HeaderSize)
        {
            int headBytes = (int)Math.Min(slice.Length, ChunkContainer.HeaderSize - _seen);
            slice[..headBytes].CopyTo(_head.AsSpan((int)_seen));
            if (_seen + headBytes == ChunkContainer.HeaderSize)
            {
                Header = ChunkContainer.ReadHeader(_head, Length);
            }
        }

        // Every byte before the checksum is hashed; the checksum's own bytes are kept to compare.
        long hashed = Math.Clamp(_bodyEnd - _seen, 0, slice.Length);
        _hash.Append(slice[..(int)hashed]);
        for (int i = (int)hashed; i < slice.Length; i++)
        {
            _stored[_seen + i - _bodyEnd] = slice[i];
        }

        _seen += slice.Length;
    }

    /// <summary>Whether every byte has passed.</summary>
    public bool IsComplete => _seen == Length;

    /// <summary>Checks the checksum once every byte has passed.</summary>
    /// <exception cref="InvalidKvDataException">Bytes are missing, or the content does not hash to the stored checksum.</exception>
    public void Complete()
    {
        if (!IsComplete)
        {
            throw ChunkContainer.Invalid("length", 0, _seen, $"the container ended before its {Length} bytes");
        }

        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(_stored);
        ulong actual = _hash.GetCurrentHashAsUInt64();
        if (stored != actual)
        {
            throw ChunkContainer.Invalid("checksum", (int)Math.Min(_bodyEnd, int.MaxValue), $"{stored:x16}", $"the content hashes to {actual:x16} (corrupt)");
        }
    }
}
