using System.Buffers.Binary;
using System.Runtime.InteropServices;
using KvFetcher.Core;
using KvFetcher.Core.Numerics;
using KvFetcher.Engine.Model;

namespace KvFetcher.Engine.Tests.Model;

public sealed class SafeTensorsFileTests : IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void WriteThenOpen_F32F16BF16_RoundTripsValuesShapesAndMetadata()
    {
        float[] f32 = [0f, 1.5f, -2.25f, 3e-3f, 1e6f, -0f];
        Half[] f16 = [(Half)0.5f, (Half)(-1.25f), (Half)65504f, (Half)6.1e-5f];
        float[] bf16Values = [1f, -3.5f, 0.15625f, 256f];
        ushort[] bf16 = [.. bf16Values.Select(FloatConversions.SingleToBFloat16)];
        string path = _temp.File("weights.safetensors");

        SafeTensorsWriter.Write(
            path,
            [
                ("a.f32", DType.Float32, [2, 3], MemoryMarshal.AsBytes(f32.AsSpan()).ToArray()),
                ("b.f16", DType.Float16, [4], MemoryMarshal.AsBytes(f16.AsSpan()).ToArray()),
                ("c.bf16", DType.BFloat16, [2, 2], MemoryMarshal.AsBytes(bf16.AsSpan()).ToArray()),
            ],
            new Dictionary<string, string> { ["format"] = "pt", ["note"] = "é" });

        using SafeTensorsFile file = SafeTensorsFile.Open(path);
        Assert.Equal(["a.f32", "b.f16", "c.bf16"], file.Names);
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal("é", file.Metadata["note"]);

        WeightTensor a = file.Get("a.f32");
        Assert.Equal(DType.Float32, a.DType);
        Assert.Equal([2, 3], a.Shape);
        Assert.Equal(f32, a.ToSingleArray());

        WeightTensor b = file.Get("b.f16");
        Assert.Equal(DType.Float16, b.DType);
        Assert.Equal(f16.Select(h => (float)h), b.ToSingleArray());

        Assert.True(file.TryGet("c.bf16", out WeightTensor? c));
        Assert.Equal(DType.BFloat16, c.DType);
        Assert.Equal([2, 2], c.Shape);
        Assert.Equal(bf16Values, c.ToSingleArray());
        Assert.Equal(MemoryMarshal.AsBytes(bf16.AsSpan()).ToArray(), c.Bytes.ToArray());
    }

    [Fact]
    public void Write_Always_PadsHeaderSoDataStartsAtMultipleOfEight()
    {
        string path = _temp.File("pad.safetensors");
        SafeTensorsWriter.Write(path, [("x", DType.Float32, [1], ModelFixtures.F32Bytes(7f))]);

        byte[] bytes = File.ReadAllBytes(path);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0UL, (8 + headerLength) % 8);
        Assert.Equal((byte)' ', bytes[8 + (int)headerLength - 1]);
        Assert.Equal(8 + (long)headerLength + 4, bytes.Length);
    }

    [Fact]
    public void Write_DataLengthDisagreesWithShape_ThrowsArgumentException()
    {
        var e = Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Write(
            _temp.File("bad.safetensors"), [("x", DType.Float16, [3], new byte[4])]));
        Assert.Contains("'x'", e.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(_temp.File("bad.safetensors")));
    }

    [Fact]
    public void Open_I32AndI64Tensors_AreReadableOnlyAsRawBytes()
    {
        byte[] data = new byte[8 + 16];
        BinaryPrimitives.WriteInt32LittleEndian(data, -7);
        BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(4), 123456);
        BinaryPrimitives.WriteInt64LittleEndian(data.AsSpan(8), long.MaxValue);
        BinaryPrimitives.WriteInt64LittleEndian(data.AsSpan(16), -2);
        string path = _temp.File("ints.safetensors");
        ModelFixtures.WriteRaw(
            path,
            """{"ids":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},"pos":{"dtype":"I64","shape":[1,2],"data_offsets":[8,24]}}""",
            data);

        using SafeTensorsFile file = SafeTensorsFile.Open(path);
        ReadOnlySpan<byte> ids = file.GetRawBytes("ids", out string idsType, out int[] idsShape);
        Assert.Equal("I32", idsType);
        Assert.Equal([2], idsShape);
        Assert.Equal([-7, 123456], MemoryMarshal.Cast<byte, int>(ids).ToArray());

        ReadOnlySpan<byte> pos = file.GetRawBytes("pos", out string posType, out int[] posShape);
        Assert.Equal("I64", posType);
        Assert.Equal([1, 2], posShape);
        Assert.Equal([long.MaxValue, -2L], MemoryMarshal.Cast<byte, long>(pos).ToArray());

        Assert.False(file.TryGet("ids", out _));
        var e = Assert.Throws<InvalidModelException>(() => file.Get("pos"));
        Assert.Contains("'pos'", e.Message, StringComparison.Ordinal);
        Assert.Contains("I64", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_FileShorterThanLengthPrefix_ThrowsTruncated()
    {
        string path = _temp.File("tiny.safetensors");
        File.WriteAllBytes(path, [1, 2, 3, 4, 5]);

        var e = Assert.Throws<InvalidModelException>(() => SafeTensorsFile.Open(path));
        Assert.Equal(path, e.FilePath);
        Assert.Contains("truncated", e.Message, StringComparison.Ordinal);
        Assert.StartsWith(path, e.Message, StringComparison.Ordinal);
        Assert.IsAssignableFrom<InvalidKvDataException>(e);
    }

    [Fact]
    public void Open_HeaderLengthBeyondFile_ThrowsNamingLength()
    {
        string path = _temp.File("long.safetensors");
        ModelFixtures.WriteRaw(path, "{}", [], headerLength: 1_000_000);

        var e = Assert.Throws<InvalidModelException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("header length at offset 0 is 1000000", e.Message, StringComparison.Ordinal);
        Assert.Contains("truncated", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_CorruptJsonHeader_ThrowsMalformed()
    {
        string path = _temp.File("json.safetensors");
        ModelFixtures.WriteRaw(path, """{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]""", new byte[4]);

        var e = Assert.Throws<InvalidModelException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("JSON header", e.Message, StringComparison.Ordinal);
        Assert.Contains("malformed", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_OverlappingOffsets_ThrowsNamingBothTensors()
    {
        string path = _temp.File("overlap.safetensors");
        ModelFixtures.WriteRaw(
            path,
            """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""",
            new byte[12]);

        var e = Assert.Throws<InvalidModelException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("'a'", e.Message, StringComparison.Ordinal);
        Assert.Contains("'b'", e.Message, StringComparison.Ordinal);
        Assert.Contains("overlap", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_OffsetsOutsideData_ThrowsNamingTensorAndOffsets()
    {
        string path = _temp.File("outside.safetensors");
        ModelFixtures.WriteRaw(path, """{"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}""", new byte[16]);

        var e = Assert.Throws<InvalidModelException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("'w'", e.Message, StringComparison.Ordinal);
        Assert.Contains("[8, 24]", e.Message, StringComparison.Ordinal);
        Assert.Contains("16-byte data section", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_TruncatedData_ThrowsEndsBeyondDataSection()
    {
        string path = _temp.File("cut.safetensors");
        SafeTensorsWriter.Write(path, [("w", DType.Float32, [4], ModelFixtures.F32Bytes(1, 2, 3, 4))]);
        byte[] bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^3]);

        var e = Assert.Throws<InvalidModelException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("'w'", e.Message, StringComparison.Ordinal);
        Assert.Contains("beyond", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("F8_E4M3")]
    [InlineData("F64")]
    [InlineData("U8")]
    public void Open_UnsupportedDtype_ThrowsNamingTensorAndDtype(string dtype)
    {
        string path = _temp.File("dtype.safetensors");
        ModelFixtures.WriteRaw(path, $$$"""{"q.weight":{"dtype":"{{{dtype}}}","shape":[8],"data_offsets":[0,8]}}""", new byte[8]);

        var e = Assert.Throws<InvalidModelException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("'q.weight'", e.Message, StringComparison.Ordinal);
        Assert.Contains($"'{dtype}'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_ShapeDisagreesWithOffsets_ThrowsWithBothSizes()
    {
        string path = _temp.File("shape.safetensors");
        ModelFixtures.WriteRaw(path, """{"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,8]}}""", new byte[8]);

        var e = Assert.Throws<InvalidModelException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("need 12 bytes", e.Message, StringComparison.Ordinal);
        Assert.Contains("spans 8", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("""{"w":{"shape":[1],"data_offsets":[0,4]}}""", "'dtype'")]
    [InlineData("""{"w":{"dtype":"F32","data_offsets":[0,4]}}""", "'shape'")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1]}}""", "'data_offsets'")]
    [InlineData("""{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}""", "'shape' entry 0 is -1")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}""", "begin is after end")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", "twice")]
    [InlineData("""{"__metadata__":{"n":1},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", "'n'")]
    [InlineData("""[1,2]""", "not an object")]
    public void Open_MalformedHeaderEntry_ThrowsNamingField(string header, string expected)
    {
        string path = _temp.File("field.safetensors");
        ModelFixtures.WriteRaw(path, header, new byte[4]);

        var e = Assert.Throws<InvalidModelException>(() => SafeTensorsFile.Open(path));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_ZeroSizedTensorsAndGaps_AreAccepted()
    {
        string path = _temp.File("zero.safetensors");
        ModelFixtures.WriteRaw(
            path,
            """{"e":{"dtype":"F16","shape":[0,4],"data_offsets":[4,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""",
            ModelFixtures.F32Bytes(0f, 9f));

        using SafeTensorsFile file = SafeTensorsFile.Open(path);
        Assert.Equal(0, file.Get("e").ByteLength);
        Assert.Equal([9f], file.Get("w").ToSingleArray());
    }

    [Fact]
    public void Get_MissingTensor_ThrowsNamingFileAndTensor()
    {
        string path = _temp.File("one.safetensors");
        SafeTensorsWriter.Write(path, [("w", DType.Float32, [1], ModelFixtures.F32Bytes(1))]);
        using SafeTensorsFile file = SafeTensorsFile.Open(path);

        var e = Assert.Throws<InvalidModelException>(() => file.Get("model.norm.weight"));
        Assert.Equal(path, e.FilePath);
        Assert.Contains("'model.norm.weight'", e.Message, StringComparison.Ordinal);
        Assert.False(file.TryGet("model.norm.weight", out _));
    }

    [Fact]
    public void Get_AfterDispose_ThrowsObjectDisposed()
    {
        string path = _temp.File("disposed.safetensors");
        SafeTensorsWriter.Write(path, [("w", DType.Float32, [1], ModelFixtures.F32Bytes(1))]);
        SafeTensorsFile file = SafeTensorsFile.Open(path);
        file.Dispose();
        file.Dispose();

        Assert.Throws<ObjectDisposedException>(() => file.Get("w"));
    }

    [Fact]
    public void Open_MissingFile_ThrowsNamingIt()
    {
        string path = _temp.File("absent.safetensors");
        var e = Assert.Throws<InvalidModelException>(() => SafeTensorsFile.Open(path));
        Assert.Equal(path, e.FilePath);
    }
}
