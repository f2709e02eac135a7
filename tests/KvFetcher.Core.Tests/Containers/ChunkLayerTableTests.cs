using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using KvFetcher.Core.Containers;
using KvFetcher.Core.Keys;

namespace KvFetcher.Core.Tests.Containers;

/// <summary>
/// Layer-addressable containers (version 2): the whole container reads as before, a layer range is read from the head
/// and the range's bytes alone and is verified, and anything tampered with is refused.
/// </summary>
public class ChunkLayerTableTests
{
    private const int Prefix = 2;
    private static readonly KvShape s_shape = new(Layers: 5, Tokens: 16, KvHeads: 2, HeadDim: 8);

    private static readonly ChunkHeader s_header = new()
    {
        Codec = CodecId.Exact,
        DType = DType.Float16,
        Key = new ChunkKey(new Hash256(1, 2, 3, 4)),
        Model = new ModelFingerprint(new Hash256(5, 6, 7, 8)),
        TokenStart = 256,
        Shape = s_shape,
    };

    private static ChunkExpectation Expected => new(s_header.Key, s_header.Model, s_header.TokenStart, s_header.Shape, s_header.DType);

    // Layers of different sizes after a 2-byte prefix (as a compressing codec writes them).
    private static readonly long[] s_layerEnds = [Prefix + 100, Prefix + 100 + 37, Prefix + 100 + 37 + 250, Prefix + 100 + 37 + 250 + 1, Prefix + 100 + 37 + 250 + 1 + 80];
    private static readonly byte[] s_payload = [.. Enumerable.Range(0, (int)s_layerEnds[^1]).Select(i => (byte)((i * 31) + 7))];

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(5)]
    public void WriteLayered_ReadWhole_SameSectionsAndGroupSize(int groupLayers)
    {
        byte[] container = Write(groupLayers);

        ChunkHeader header = ChunkContainer.Read(container, Expected, out ReadOnlySpan<byte> parameters, out ReadOnlySpan<byte> payload);

        Assert.Equal(groupLayers, header.LayerGroup);
        Assert.Equal(s_header with { LayerGroup = groupLayers }, header);
        Assert.True(parameters.IsEmpty);
        Assert.True(payload.SequenceEqual(s_payload));
        Assert.Equal(ChunkContainer.LayeredVersion, BinaryPrimitives.ReadUInt16LittleEndian(container.AsSpan(8)));
        Assert.Equal(ChunkContainer.GetSize(0, s_payload.Length) + ChunkLayerTable.SizeOf(s_shape.Layers, groupLayers), container.Length);
    }

    [Theory]
    [InlineData(1, 0, 5)]
    [InlineData(1, 3, 5)]
    [InlineData(1, 1, 2)]
    [InlineData(2, 2, 5)]
    [InlineData(2, 0, 4)]
    [InlineData(5, 0, 5)]
    public void RangeOf_HeadThenRange_BytesAreThoseLayersAndVerify(int groupLayers, int layerStart, int layerEnd)
    {
        byte[] container = Write(groupLayers);
        byte[] head = container[..ChunkLayerTable.HeadSizeOf(s_shape, groupLayers)];

        ChunkLayerTable table = ChunkLayerTable.ReadHead(head, container.Length, Expected);
        (long offset, long length) = table.RangeOf(layerStart, layerEnd);
        byte[] range = container.AsSpan((int)offset, (int)length).ToArray();
        table.Verify(layerStart, layerEnd, range);

        long from = layerStart == 0 ? Prefix : s_layerEnds[layerStart - 1];
        Assert.True(range.AsSpan().SequenceEqual(s_payload.AsSpan((int)from, (int)(s_layerEnds[layerEnd - 1] - from))));
        Assert.True(table.Prefix.SequenceEqual(s_payload.AsSpan(0, Prefix)));
    }

    [Fact]
    public void Verify_TamperedGroup_Refused()
    {
        byte[] container = Write(1);
        ChunkLayerTable table = ChunkLayerTable.ReadHead(container, container.Length, Expected);
        (long offset, long length) = table.RangeOf(3, 5);
        byte[] range = container.AsSpan((int)offset, (int)length).ToArray();
        range[^3] ^= 0x10; // in layer 4

        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() => table.Verify(3, 5, range));
        Assert.Contains("layer group 4", ex.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidKvDataException>(() => table.Verify(3, 5, range.AsSpan(0, range.Length - 1).ToArray()));
    }

    [Theory]
    [InlineData(20)]   // header: token start
    [InlineData(130)]  // table: prefix length
    [InlineData(150)]  // table: an end offset
    [InlineData(160)]  // table: a group checksum
    public void ReadHead_TamperedHead_Refused(int offset)
    {
        byte[] container = Write(1);
        container[offset] ^= 0x01;

        Assert.Throws<InvalidKvDataException>(() => ChunkLayerTable.ReadHead(container, container.Length, Expected));
        Assert.Throws<InvalidKvDataException>(() => ChunkContainer.Read(container, out _, out _));
    }

    [Fact]
    public void Read_TableThatLiesWithValidChecksums_Refused()
    {
        // A writer whose table does not describe its payload (checksums recomputed over the lie) is caught by a whole read.
        byte[] container = TableThatLies();

        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() => ChunkContainer.Read(container, out _, out _));
        Assert.Contains("layer group 1", ex.Message, StringComparison.Ordinal);
        ChunkLayerTable table = ChunkLayerTable.ReadHead(container, container.Length, Expected);
        (long offset, long length) = table.RangeOf(1, 2);
        Assert.Throws<InvalidKvDataException>(() => table.Verify(1, 2, container.AsSpan((int)offset, (int)length)));
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(1, 7)]
    [InlineData(2, 130)]
    [InlineData(2, 1 << 20)]
    public void StreamCheck_LayeredContainerAnySlicing_AgreesWithTheWholeRead(int groupLayers, int slice)
    {
        byte[] container = Write(groupLayers);
        var check = new ContainerStreamCheck(container.Length);
        for (int at = 0; at < container.Length; at += slice)
        {
            check.Append(container.AsSpan(at, Math.Min(slice, container.Length - at)));
        }

        check.Complete();
        Assert.Equal(ChunkContainer.Read(container, out _, out _), check.Header);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(64)]
    public void StreamCheck_TableThatLiesWithValidChecksums_RefusedBeforeTheEnd(int slice)
    {
        // As the whole read refuses it (above), so must a server that checks an object while it streams it.
        byte[] container = TableThatLies();
        var check = new ContainerStreamCheck(container.Length);

        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() =>
        {
            for (int at = 0; at < container.Length; at += slice)
            {
                check.Append(container.AsSpan(at, Math.Min(slice, container.Length - at)));
            }
        });

        Assert.Contains("layer group 1", ex.Message, StringComparison.Ordinal);
        Assert.False(check.IsComplete);
    }

    [Fact]
    public void StreamCheck_PayloadPrefixChanged_Refused()
    {
        byte[] container = Write(1);
        ChunkLayerTable table = ChunkLayerTable.ReadHead(container, container.Length, Expected);
        container[(int)table.PayloadStart] ^= 0x01; // the prefix every range shares, outside every group's checksum
        BinaryPrimitives.WriteUInt64LittleEndian(container.AsSpan(container.Length - 8), XxHash3.HashToUInt64(container.AsSpan(0, container.Length - 8)));
        var check = new ContainerStreamCheck(container.Length);

        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() => check.Append(container));

        Assert.Contains("payload prefix", ex.Message, StringComparison.Ordinal);
        Assert.False(ChunkContainer.IsIntact(container));
    }

    [Fact]
    public void ReadHead_OtherChunkVersionOneOrMacReader_Refused()
    {
        byte[] container = Write(1);
        Assert.Throws<InvalidKvDataException>(() => ChunkLayerTable.ReadHead(container, container.Length, Expected with { TokenStart = 0 }));
        Assert.Throws<InvalidKvDataException>(() => ChunkLayerTable.ReadHead(container, container.Length, Expected with { Key = new ChunkKey(new Hash256(9, 9, 9, 9)) }));
        Assert.Throws<InvalidKvDataException>(() => ChunkLayerTable.ReadHead(container.AsSpan(0, 100).ToArray(), container.Length, Expected));
        Assert.Throws<ChunkAuthenticationException>(() => ChunkLayerTable.ReadHead(container, container.Length,
            Expected with { Mac = new ChunkAuthenticator(new byte[32]).ForTenant("t") }));

        var plain = new ArrayBufferWriter<byte>();
        ChunkContainer.Write(s_header, [], s_payload, plain);
        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() => ChunkLayerTable.ReadHead(plain.WrittenSpan, plain.WrittenCount, Expected));
        Assert.Contains("no layer table", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RangeOf_NotOnGroupBoundaries_Throws()
    {
        byte[] container = Write(2);
        ChunkLayerTable table = ChunkLayerTable.ReadHead(container, container.Length, Expected);

        Assert.Throws<ArgumentOutOfRangeException>(() => table.RangeOf(1, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => table.RangeOf(0, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => table.RangeOf(2, 2));
    }

    [Fact]
    public void WriteLayered_EndsThatDoNotCoverThePayload_Throws()
    {
        var output = new ArrayBufferWriter<byte>();
        long[] shortEnds = [.. s_layerEnds];
        shortEnds[^1]--;
        Assert.Throws<ArgumentException>(() => ChunkContainer.WriteLayered(s_header, [], s_payload, Prefix, shortEnds, 1, output));
        long[] decreasing = [.. s_layerEnds];
        decreasing[2] = 1;
        Assert.Throws<ArgumentException>(() => ChunkContainer.WriteLayered(s_header, [], s_payload, Prefix, decreasing, 1, output));
        Assert.Throws<ArgumentOutOfRangeException>(() => ChunkContainer.WriteLayered(s_header, [], s_payload, 9, s_layerEnds, 1, output));
    }

    /// <summary>A container whose group 1 checksum in the table is wrong, with the head and whole checksums recomputed over the lie.</summary>
    private static byte[] TableThatLies()
    {
        byte[] container = Write(1);
        int entry = ChunkContainer.HeaderSize + 16 + 16 + 8; // group 1's checksum
        container[entry] ^= 0xFF;
        int headEnd = ChunkContainer.HeaderSize + ChunkLayerTable.SizeOf(s_shape.Layers, 1) - 8;
        BinaryPrimitives.WriteUInt64LittleEndian(container.AsSpan(headEnd), XxHash3.HashToUInt64(container.AsSpan(0, headEnd)));
        BinaryPrimitives.WriteUInt64LittleEndian(container.AsSpan(container.Length - 8), XxHash3.HashToUInt64(container.AsSpan(0, container.Length - 8)));
        return container;
    }

    private static byte[] Write(int groupLayers)
    {
        var output = new ArrayBufferWriter<byte>();
        ChunkContainer.WriteLayered(s_header, [], s_payload, Prefix, s_layerEnds, groupLayers, output);
        return output.WrittenSpan.ToArray();
    }
}
