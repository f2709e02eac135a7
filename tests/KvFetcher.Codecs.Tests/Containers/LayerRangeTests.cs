using System.Buffers;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Core.Keys;

namespace KvFetcher.Codecs.Tests.Containers;

/// <summary>
/// The layer-addressable codecs (raw, exact) in layer-addressable containers: a layer range read from the head and the
/// range's bytes decodes to exactly the slice of the whole chunk's decode, and a tampered range is refused.
/// </summary>
public class LayerRangeTests
{
    public static TheoryData<string, DType, int, int> Cases => new()
    {
        { "raw", DType.Float16, 1, 20 },
        { "raw", DType.BFloat16, 4, 8 },
        { "exact", DType.Float16, 1, 31 },
        { "exact", DType.Float16, 1, 0 },
        { "exact", DType.BFloat16, 2, 16 },
        { "exact", DType.Float32, 3, 3 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void DecodeLayers_UpperRange_EqualsTheSliceOfTheWholeDecode(string codecName, DType dtype, int groupLayers, int layerStart)
    {
        IKvCodec codec = KvCodecs.Get(codecName);
        (byte[] kv, KvShape shape, ChunkHeader header, byte[] container) = Stored(codec, dtype, groupLayers);
        var whole = new byte[kv.Length];
        codec.DecodeContainer(container, Expectation(header), whole);
        Assert.Equal(kv, whole);

        ChunkLayerTable table = ChunkLayerTable.ReadHead(container.AsSpan(0, ChunkLayerTable.HeadSizeOf(shape, groupLayers)), container.Length, Expectation(header));
        (long offset, long length) = table.RangeOf(layerStart, shape.Layers);
        int layerBytes = kv.Length / shape.Layers;
        var part = new byte[(shape.Layers - layerStart) * layerBytes];
        codec.DecodeLayers(table, container.AsSpan((int)offset, (int)length), layerStart, shape.Layers, part);

        Assert.True(part.AsSpan().SequenceEqual(kv.AsSpan(layerStart * layerBytes)));
        Assert.True(length < container.Length || layerStart == 0);
    }

    [Theory]
    [InlineData("raw")]
    [InlineData("exact")]
    public void DecodeLayers_TamperedRange_Refused(string codecName)
    {
        IKvCodec codec = KvCodecs.Get(codecName);
        (_, KvShape shape, ChunkHeader header, byte[] container) = Stored(codec, DType.Float16, 1);
        ChunkLayerTable table = ChunkLayerTable.ReadHead(container, container.Length, Expectation(header));
        (long offset, long length) = table.RangeOf(16, shape.Layers);
        byte[] range = container.AsSpan((int)offset, (int)length).ToArray();
        range[range.Length / 2] ^= 0x04;

        InvalidKvDataException ex = Assert.Throws<InvalidKvDataException>(() =>
            codec.DecodeLayers(table, range, 16, shape.Layers, new byte[(shape.Layers - 16) * (int)(shape.Elements * 2 / shape.Layers)]));
        Assert.Contains("checksum of layer group", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void DecodeLayers_OtherCodecsTable_Refused()
    {
        (_, KvShape shape, ChunkHeader header, byte[] container) = Stored(KvCodecs.Get("raw"), DType.Float16, 1);
        ChunkLayerTable table = ChunkLayerTable.ReadHead(container, container.Length, Expectation(header));
        (long offset, long length) = table.RangeOf(0, shape.Layers);

        Assert.Throws<InvalidKvDataException>(() => KvCodecs.Get("exact").DecodeLayers(table, container.AsSpan((int)offset, (int)length), 0, shape.Layers, new byte[shape.Elements * 2]));
    }

    [Fact]
    public void WriteContainer_CodecWithoutLayers_WritesAPlainContainer()
    {
        IKvCodec codec = KvCodecs.Get("cachegen");
        (byte[] kv, KvShape shape) = RealKv.Chunk(64, 64, DType.Float16);
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        codec.Encode(kv, shape, DType.Float16, 0, 0, parameters, payload);
        var output = new ArrayBufferWriter<byte>();
        codec.WriteContainer(Header(codec, shape, DType.Float16), parameters.WrittenSpan, payload.WrittenSpan, 1, output);

        Assert.Equal(0, ChunkContainer.Read(output.WrittenSpan, out _, out _).LayerGroup);
    }

    private static (byte[] Kv, KvShape Shape, ChunkHeader Header, byte[] Container) Stored(IKvCodec codec, DType dtype, int groupLayers)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(64, 64, dtype);
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        codec.Encode(kv, shape, dtype, 64, codec.DefaultLevel, parameters, payload);
        ChunkHeader header = Header(codec, shape, dtype);
        var output = new ArrayBufferWriter<byte>();
        codec.WriteContainer(header, parameters.WrittenSpan, payload.WrittenSpan, groupLayers, output);
        return (kv, shape, header with { LayerGroup = groupLayers }, output.WrittenSpan.ToArray());
    }

    private static ChunkHeader Header(IKvCodec codec, KvShape shape, DType dtype) => new()
    {
        Codec = codec.Id,
        Level = (byte)codec.DefaultLevel,
        DType = dtype,
        Key = new ChunkKey(new Hash256(11, 12, 13, 14)),
        Model = new ModelFingerprint(new Hash256(15, 16, 17, 18)),
        TokenStart = 64,
        Shape = shape,
    };

    private static ChunkExpectation Expectation(ChunkHeader header) => new(header.Key, header.Model, header.TokenStart, header.Shape, header.DType);
}
