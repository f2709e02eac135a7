using System.Buffers.Binary;
using System.IO.Hashing;

namespace KvFetcher.Core.Containers;

/// <summary>
/// Verifies a container of a known length whose bytes pass through in order, slice by slice (a server sending an
/// object while it reads it): every header check as soon as the first <see cref="ChunkContainer.HeaderSize"/> bytes
/// have passed, a layer-addressable container's table (head checksum, payload prefix, each layer group's checksum) as
/// its bytes pass, the checksum once the last byte has. The same checks as <see cref="ChunkContainer.IsIntact"/>,
/// without holding the container: a reader that sends bytes before <see cref="Complete"/> must treat a failure there as a
/// torn object (abort what it sent), never as a good one.
/// </summary>
public sealed class ContainerStreamCheck
{
    private readonly XxHash3 _hash = new();
    private byte[] _head = new byte[ChunkContainer.HeaderSize];
    private readonly byte[] _stored = new byte[ChunkContainer.ChecksumSize];
    private readonly long _bodyEnd;
    private long _seen;

    /// <summary>A layer-addressable container's table, once its head has passed; and the group being hashed.</summary>
    private ChunkLayerTable? _table;
    private XxHash3? _groupHash;
    private int _group;

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

        if (_seen < _head.Length)
        {
            TakeHead(slice, _seen);
        }

        if (_table is { } table)
        {
            CheckPayload(table, slice);
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

    /// <summary>
    /// Collects the head from <paramref name="slice"/> (at container offset <paramref name="at"/>): the header, checked
    /// when its last byte is in and grown to hold the layer table when the header says there is one; then the table,
    /// checked when complete.
    /// </summary>
    private void TakeHead(ReadOnlySpan<byte> slice, long at)
    {
        while (!slice.IsEmpty && at < _head.Length)
        {
            int n = (int)Math.Min(slice.Length, _head.Length - at);
            slice[..n].CopyTo(_head.AsSpan((int)at));
            slice = slice[n..];
            at += n;
            if (at < _head.Length)
            {
                return;
            }

            if (Header is not { } header)
            {
                header = ChunkContainer.ReadHeader(_head, Length);
                Header = header;
                if (header.LayerGroup > 0)
                {
                    byte[] head = new byte[ChunkLayerTable.HeadSizeOf(header.Shape, header.LayerGroup)];
                    _head.CopyTo(head, 0);
                    _head = head;
                }
            }
            else
            {
                _table = ChunkLayerTable.Parse(_head, header, ParametersLength(), PayloadLength());
            }
        }
    }

    private long ParametersLength() => BinaryPrimitives.ReadInt64LittleEndian(_head.AsSpan(112));

    private long PayloadLength() => BinaryPrimitives.ReadInt64LittleEndian(_head.AsSpan(120));

    /// <summary>The payload bytes of <paramref name="slice"/> (at container offset <c>_seen</c>): the prefix compared, each layer group hashed and checked at its end.</summary>
    private void CheckPayload(ChunkLayerTable table, ReadOnlySpan<byte> slice)
    {
        long from = Math.Max(_seen, table.PayloadStart);
        long to = Math.Min(_seen + slice.Length, table.PayloadStart + table.PayloadLength);
        for (long at = from; at < to;)
        {
            long payloadAt = at - table.PayloadStart;
            ReadOnlySpan<byte> bytes = slice.Slice((int)(at - _seen), (int)(to - at));
            ReadOnlySpan<byte> prefix = table.Prefix;
            if (payloadAt < prefix.Length)
            {
                int n = (int)Math.Min(bytes.Length, prefix.Length - payloadAt);
                if (!bytes[..n].SequenceEqual(prefix.Slice((int)payloadAt, n)))
                {
                    throw ChunkContainer.Invalid("payload prefix", ChunkContainer.HeaderSize + 8, Convert.ToHexString(prefix), "the payload starts otherwise");
                }

                at += n;
                continue;
            }

            (_, long groupEnd) = table.GroupBounds(_group);
            int take = (int)Math.Min(bytes.Length, groupEnd - payloadAt);
            _groupHash ??= new XxHash3();
            _groupHash.Append(bytes[..take]);
            at += take;
            if (payloadAt + take == groupEnd)
            {
                table.CheckGroupHash(_group, _groupHash.GetCurrentHashAsUInt64());
                _groupHash.Reset();
                _group++;
            }
        }
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
