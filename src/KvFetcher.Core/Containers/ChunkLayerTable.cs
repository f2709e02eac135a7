using System.Buffers.Binary;
using System.IO.Hashing;

namespace KvFetcher.Core.Containers;

/// <summary>
/// The layer table of a layer-addressable chunk container (version 2 of <see cref="ChunkContainer"/>): where each group
/// of layers lies in the payload, so a reader can fetch and verify a layer range of a stored chunk without the rest.
/// It follows the 128-byte header (offset 108 of which holds G, the layers per group; n = ceil(layers / G) groups):
/// <code>
/// offset     size  field
///    128        8  payload prefix length P (0..8): the payload's first P bytes, which every layer range needs
///    136        8  those P bytes, zero padded
///    144   16 x n  per group g (layers [g·G, min((g+1)·G, layers))): u64 where its bytes end in the payload (group 0
///                  starts at P, each next one where the previous ends, the last ends at the payload's end), then the
///                  XxHash3-64 of its bytes
/// 144+16n       8  XxHash3-64 of bytes [0, 144 + 16n): the header and the table before it (the head checksum)
/// </code>
/// A layer-range read takes the head (<see cref="HeadSizeOf"/> bytes: header and table) and checks its structure, its
/// head checksum and every identity field against what the reader expects (<see cref="ReadHead"/>), then the byte range
/// of the wanted groups (<see cref="RangeOf"/>) and checks each group's checksum (<see cref="Verify"/>). Only
/// containers without codec parameters are read so (the layer-addressable codecs, raw and exact, have none). A whole read
/// checks the table against the payload as well, so a table that lies is found by any reader. A MAC tag covers the whole
/// container only: a reader that requires authenticated chunks (<see cref="ChunkExpectation.Mac"/>) reads them whole.
/// </summary>
public sealed class ChunkLayerTable
{
    /// <summary>The most payload bytes every layer range shares (a codec's stream header).</summary>
    public const int MaxPrefix = 8;

    private const int PrefixOffset = ChunkContainer.HeaderSize;
    private const int EntriesOffset = ChunkContainer.HeaderSize + 16;

    private readonly long[] _ends;
    private readonly ulong[] _hashes;
    private readonly byte[] _prefix;

    private ChunkLayerTable(ChunkHeader header, long parametersLength, long payloadLength, byte[] prefix, long[] ends, ulong[] hashes)
    {
        Header = header;
        PayloadStart = ChunkContainer.HeaderSize + SizeOf(header.Shape.Layers, header.LayerGroup) + parametersLength;
        PayloadLength = payloadLength;
        _prefix = prefix;
        _ends = ends;
        _hashes = hashes;
    }

    /// <summary>The container's header (checked against the reader's expectation by <see cref="ReadHead"/>).</summary>
    public ChunkHeader Header { get; }

    /// <summary>Layers per group: a range read starts and ends on a group boundary (or the last layer).</summary>
    public int GroupLayers => Header.LayerGroup;

    public int Groups => _ends.Length;

    /// <summary>The container offset of the payload's first byte.</summary>
    public long PayloadStart { get; }

    public long PayloadLength { get; }

    /// <summary>The payload's first bytes, which every layer range needs before its own (a codec's stream header).</summary>
    public ReadOnlySpan<byte> Prefix => _prefix;

    /// <summary>Bytes of a table for <paramref name="layers"/> layers in groups of <paramref name="groupLayers"/>.</summary>
    public static int SizeOf(int layers, int groupLayers) => 24 + (16 * GroupCount(layers, groupLayers));

    /// <summary>Bytes of the head of a layer-addressable container (header and table): what a range read fetches first.</summary>
    public static int HeadSizeOf(KvShape shape, int groupLayers) => ChunkContainer.HeaderSize + SizeOf(shape.Layers, groupLayers);

    /// <summary>
    /// Checks the head of a layer-addressable container of <paramref name="objectLength"/> bytes (its first
    /// <see cref="HeadSizeOf"/> bytes): structure, head checksum, table, and every identity field against
    /// <paramref name="expected"/>. Returns the table to read layer ranges by.
    /// </summary>
    /// <exception cref="InvalidKvDataException">The head is malformed, corrupt, of a version-1 container, has codec parameters, or is not the expected chunk's.</exception>
    /// <exception cref="ChunkAuthenticationException">The reader requires authenticated chunks: a layer range cannot be authenticated, read the chunk whole.</exception>
    public static ChunkLayerTable ReadHead(ReadOnlySpan<byte> head, long objectLength, in ChunkExpectation expected)
    {
        if (expected.Mac is not null)
        {
            throw new ChunkAuthenticationException("KV chunk container: a layer range cannot be authenticated (the MAC tag covers the whole container); read the chunk whole.");
        }

        ChunkHeader header = ChunkContainer.ReadHeader(head, objectLength);
        if (header.LayerGroup == 0)
        {
            throw ChunkContainer.Invalid("version", 8, ChunkContainer.Version, "the container has no layer table; read it whole");
        }

        int headSize = HeadSizeOf(header.Shape, header.LayerGroup);
        if (head.Length < headSize)
        {
            throw ChunkContainer.Invalid("length", 0, head.Length, $"the head of this container (header and layer table) is {headSize} bytes");
        }

        long parametersLength = BinaryPrimitives.ReadInt64LittleEndian(head[112..]);
        if (parametersLength != 0)
        {
            throw ChunkContainer.Invalid("parameters length", 112, parametersLength, "a layer range is read only from containers without codec parameters");
        }

        ChunkLayerTable table = Parse(head[..headSize], header, parametersLength, BinaryPrimitives.ReadInt64LittleEndian(head[120..]));
        ChunkContainer.CheckIdentity(header, expected);
        return table;
    }

    /// <summary>
    /// The container bytes [offset, offset + length) that hold layers [<paramref name="layerStart"/>,
    /// <paramref name="layerEnd"/>), which must start and end on group boundaries (or end at the last layer).
    /// </summary>
    public (long Offset, long Length) RangeOf(int layerStart, int layerEnd)
    {
        (int first, int last) = GroupSpan(layerStart, layerEnd);
        long start = first == 0 ? _prefix.Length : _ends[first - 1];
        return (PayloadStart + start, _ends[last - 1] - start);
    }

    /// <summary>
    /// Checks <paramref name="bytes"/>, read at <see cref="RangeOf"/>(<paramref name="layerStart"/>, <paramref name="layerEnd"/>),
    /// against each group's checksum.
    /// </summary>
    /// <exception cref="InvalidKvDataException">The bytes are not the range's length, or a group does not hash to its checksum.</exception>
    public void Verify(int layerStart, int layerEnd, ReadOnlySpan<byte> bytes)
    {
        (int first, int last) = GroupSpan(layerStart, layerEnd);
        long origin = first == 0 ? _prefix.Length : _ends[first - 1];
        if (bytes.Length != _ends[last - 1] - origin)
        {
            throw ChunkContainer.Invalid("length", 0, bytes.Length, $"layers [{layerStart}, {layerEnd}) are {_ends[last - 1] - origin} bytes");
        }

        for (int g = first; g < last; g++)
        {
            long start = g == 0 ? _prefix.Length : _ends[g - 1];
            CheckGroup(g, bytes.Slice((int)(start - origin), (int)(_ends[g] - start)));
        }
    }

    /// <summary>Checks the table against a whole container's payload: its prefix and every group's checksum.</summary>
    internal void CheckWhole(ReadOnlySpan<byte> payload)
    {
        if (!payload[.._prefix.Length].SequenceEqual(_prefix))
        {
            throw ChunkContainer.Invalid("payload prefix", PrefixOffset + 8, Convert.ToHexString(_prefix), $"the payload starts with {Convert.ToHexString(payload[.._prefix.Length])}");
        }

        Verify(0, Header.Shape.Layers, payload[_prefix.Length..]);
    }

    /// <summary>Writes the table for <paramref name="payload"/> into <paramref name="headAndTable"/>[128..], whose header is written.</summary>
    internal static void Write(int layers, in ChunkContainer.LayerLayout layout, ReadOnlySpan<byte> payload, Span<byte> headAndTable)
    {
        int groups = GroupCount(layers, layout.GroupLayers);
        Span<byte> table = headAndTable[PrefixOffset..];
        table.Clear();
        BinaryPrimitives.WriteInt64LittleEndian(table, layout.PrefixLength);
        payload[..layout.PrefixLength].CopyTo(table[8..]);
        long start = layout.PrefixLength;
        for (int g = 0; g < groups; g++)
        {
            long end = layout.LayerEnds[Math.Min(layers, (g + 1) * layout.GroupLayers) - 1];
            Span<byte> entry = table.Slice(16 + (16 * g), 16);
            BinaryPrimitives.WriteInt64LittleEndian(entry, end);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[8..], XxHash3.HashToUInt64(payload[(int)start..(int)end]));
            start = end;
        }

        int headEnd = EntriesOffset + (16 * groups);
        BinaryPrimitives.WriteUInt64LittleEndian(headAndTable[headEnd..], XxHash3.HashToUInt64(headAndTable[..headEnd]));
    }

    /// <summary>
    /// Checks the table in <paramref name="headAndTable"/> (the container's first bytes through the table) against the
    /// header's lengths and its head checksum, and returns it.
    /// </summary>
    internal static ChunkLayerTable Parse(ReadOnlySpan<byte> headAndTable, in ChunkHeader header, long parametersLength, long payloadLength)
    {
        int groups = GroupCount(header.Shape.Layers, header.LayerGroup);
        int headEnd = EntriesOffset + (16 * groups);
        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(headAndTable[headEnd..]);
        ulong actual = XxHash3.HashToUInt64(headAndTable[..headEnd]);
        if (stored != actual)
        {
            throw ChunkContainer.Invalid("head checksum", headEnd, $"{stored:x16}", $"the header and layer table hash to {actual:x16} (corrupt)");
        }

        long prefixLength = BinaryPrimitives.ReadInt64LittleEndian(headAndTable[PrefixOffset..]);
        ChunkContainer.CheckRange("payload prefix length", PrefixOffset, prefixLength, 0, Math.Min(MaxPrefix, payloadLength));
        ReadOnlySpan<byte> padding = headAndTable.Slice(PrefixOffset + 8 + (int)prefixLength, MaxPrefix - (int)prefixLength);
        if (padding.ContainsAnyExcept((byte)0))
        {
            throw ChunkContainer.Invalid("payload prefix", PrefixOffset + 8, Convert.ToHexString(headAndTable.Slice(PrefixOffset + 8, MaxPrefix)), "bytes past its length must be zero");
        }

        var ends = new long[groups];
        var hashes = new ulong[groups];
        long previous = prefixLength;
        for (int g = 0; g < groups; g++)
        {
            int offset = EntriesOffset + (16 * g);
            long end = BinaryPrimitives.ReadInt64LittleEndian(headAndTable[offset..]);
            long max = g == groups - 1 ? payloadLength : Math.Min(payloadLength, int.MaxValue);
            long min = g == groups - 1 ? payloadLength : previous;
            ChunkContainer.CheckRange($"end of layer group {g}", offset, end, min, max);
            ends[g] = end;
            hashes[g] = BinaryPrimitives.ReadUInt64LittleEndian(headAndTable[(offset + 8)..]);
            previous = end;
        }

        return new ChunkLayerTable(header, parametersLength, payloadLength, headAndTable.Slice(PrefixOffset + 8, (int)prefixLength).ToArray(), ends, hashes);
    }

    private static int GroupCount(int layers, int groupLayers) => (layers + groupLayers - 1) / groupLayers;

    private (int First, int Last) GroupSpan(int layerStart, int layerEnd)
    {
        int layers = Header.Shape.Layers;
        if (layerStart < 0 || layerEnd > layers || layerStart >= layerEnd)
        {
            throw new ArgumentOutOfRangeException(nameof(layerEnd), $"Layers [{layerStart}, {layerEnd}) are not a non-empty range of the chunk's {layers}.");
        }

        if (layerStart % GroupLayers != 0 || (layerEnd % GroupLayers != 0 && layerEnd != layers))
        {
            throw new ArgumentOutOfRangeException(nameof(layerStart), $"Layers [{layerStart}, {layerEnd}) do not start and end on groups of {GroupLayers} layers.");
        }

        return (layerStart / GroupLayers, GroupCount(layerEnd, GroupLayers));
    }

    /// <summary>Where group <paramref name="group"/>'s bytes lie in the payload: [Start, End).</summary>
    internal (long Start, long End) GroupBounds(int group) => (group == 0 ? _prefix.Length : _ends[group - 1], _ends[group]);

    private void CheckGroup(int group, ReadOnlySpan<byte> bytes) => CheckGroupHash(group, XxHash3.HashToUInt64(bytes));

    /// <summary>Refuses group <paramref name="group"/> unless its bytes hashed to <paramref name="actual"/> match its checksum.</summary>
    internal void CheckGroupHash(int group, ulong actual)
    {
        if (actual != _hashes[group])
        {
            throw ChunkContainer.Invalid($"checksum of layer group {group}", EntriesOffset + (16 * group) + 8, $"{_hashes[group]:x16}", $"its bytes hash to {actual:x16} (corrupt)");
        }
    }
}
