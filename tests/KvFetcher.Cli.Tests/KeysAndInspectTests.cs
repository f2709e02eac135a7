using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using KvFetcher.Codecs;
using KvFetcher.Codecs.Raw;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Core.Keys;
using KvFetcher.Engine;

namespace KvFetcher.Cli.Tests;

public sealed class KeysAndInspectTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvfetch-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string BundledModel => Path.Combine(AppContext.BaseDirectory, "models", "kvf-code-32l");

    private string WriteText()
    {
        string path = Path.Combine(_dir, "context.txt");
        File.WriteAllText(path, string.Concat(Enumerable.Repeat("The json module encodes Python objects as JSON text and decodes them back. ", 40)));
        return path;
    }

    [Fact]
    public void Keys_TwoProcesses_SameKeysAsThisProcess()
    {
        string text = WriteText();
        (int exit1, string first, string error1) = KvFetchProcess.Run("keys", "--file", text, "--tenant", "acme", "--chunk-size", "64");
        (int exit2, string second, _) = KvFetchProcess.Run("keys", "--file", text, "--tenant", "acme", "--chunk-size", "64");
        Assert.True(exit1 == 0, error1);
        Assert.Equal(0, exit2);
        Assert.Equal(first, second);

        using LanguageModel lm = LanguageModel.Open(BundledModel);
        int[] tokens = lm.Tokenizer.Encode(File.ReadAllText(text));
        ChunkKey[] keys = ChunkKey.ComputeChain(lm.Fingerprint, "acme", tokens, 64);
        Assert.NotEmpty(keys);
        Assert.Contains($"model {lm.Fingerprint}", first, StringComparison.Ordinal);
        foreach (ChunkKey key in keys)
        {
            Assert.Contains(key.ToString(), first, StringComparison.Ordinal);
        }

        (_, string otherTenant, _) = KvFetchProcess.Run("keys", "--file", text, "--tenant", "other", "--chunk-size", "64");
        Assert.DoesNotContain(keys[0].ToString(), otherTenant, StringComparison.Ordinal);
    }

    [Fact]
    public void Inspect_ValidContainer_PrintsHeaderAndDecodes()
    {
        string path = WriteContainer(out ChunkHeader header);
        (int exit, string output, string error) = KvFetchProcess.Run("inspect", path);
        Assert.True(exit == 0, error);
        Assert.Contains("checksum ok", output, StringComparison.Ordinal);
        Assert.Contains(header.Key.ToString(), output, StringComparison.Ordinal);
        Assert.Contains("tokens      [32, 40)", output, StringComparison.Ordinal);
        Assert.Contains("decode      ok", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Inspect_LayerAddressableContainer_PrintsVersionTwoAndDecodes()
    {
        string path = WriteContainer(out _, groupLayers: 1);
        (int exit, string output, string error) = KvFetchProcess.Run("inspect", path);
        Assert.True(exit == 0, error);
        Assert.Contains("version 2 (layer-addressable, 1 layer(s) per group), checksum and layer table ok", output, StringComparison.Ordinal);
        Assert.Contains("decode      ok", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Inspect_CorruptContainer_OneLineErrorNamingChecksum()
    {
        string path = WriteContainer(out _);
        byte[] bytes = File.ReadAllBytes(path);
        bytes[200] ^= 0x10;
        File.WriteAllBytes(path, bytes);
        (int exit, _, string error) = KvFetchProcess.Run("inspect", path);
        Assert.Equal(1, exit);
        Assert.Contains("checksum", error, StringComparison.Ordinal);
        Assert.Single(error.Trim().Split('\n'));
    }

    /// <summary>Header fields (offset, little-endian width, value) that a container may carry with its checksum recomputed.</summary>
    public static TheoryData<string, int, int, long, string> HostileFields => new()
    {
        { "token count int.MaxValue", 88, 8, int.MaxValue, "token count at offset 88 is 2147483647" },
        { "token count int.MaxValue, widest shape", 88, 8, int.MaxValue, "token count at offset 88 is 2147483647" },
        { "token count long.MaxValue", 88, 8, long.MaxValue, "token count at offset 88 is 9223372036854775807" },
        { "token count negative", 88, 8, -1, "token count at offset 88 is -1" },
        { "token start at the end of int", 80, 8, int.MaxValue, "token start at offset 80 is 2147483647" },
        { "token start negative", 80, 8, long.MinValue, "token start at offset 80 is -9223372036854775808" },
        { "layers 4096, one token over 2 GB", 96, 4, 4096, "token count at offset 88 is 8" },
        { "layers negative", 96, 4, int.MinValue, "layers at offset 96 is -2147483648" },
        { "KV heads huge", 100, 4, int.MaxValue, "KV heads at offset 100 is 2147483647" },
        { "parameters length huge", 112, 8, long.MaxValue, "parameters length at offset 112 is 9223372036854775807" },
        { "payload length negative", 120, 8, -5, "payload length at offset 120 is -5" },
    };

    [Theory]
    [MemberData(nameof(HostileFields))]
    public void Inspect_HugeOrNegativeHeaderField_OneLineErrorNamingFieldOffsetAndValue(string @case, int offset, int width, long value, string expected)
    {
        string path = WriteContainer(out _);
        byte[] bytes = File.ReadAllBytes(path);
        if (width == 8)
        {
            BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(offset), value);
        }
        else
        {
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(offset), (int)value);
        }

        if (@case.Contains("widest shape", StringComparison.Ordinal) || @case.Contains("over 2 GB", StringComparison.Ordinal))
        {
            // 4096 layers x 4096 heads x 4096 head dim (each within its range): one token's KV is 2^38 bytes, and with
            // int.MaxValue tokens the element count overflows 64 bits.
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(96), 4096);
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(100), 4096);
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(104), 4096);
        }

        // The checksum is no MAC: whoever forges a header recomputes it, so only the field checks stand in the way.
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(bytes.Length - 8), XxHash3.HashToUInt64(bytes.AsSpan(0, bytes.Length - 8)));
        File.WriteAllBytes(path, bytes);

        (int exit, string output, string error) = KvFetchProcess.Run("inspect", path);

        Assert.True(exit == 1, $"exit {exit}; stdout: {output}; stderr: {error}");
        Assert.Single(error.Trim().Split('\n'));
        Assert.StartsWith("kvfetch: error: KV chunk container: ", error, StringComparison.Ordinal);
        Assert.Contains(expected, error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
    }

    private string WriteContainer(out ChunkHeader header, int groupLayers = 0)
    {
        var shape = new KvShape(2, 8, 2, 16);
        var kv = new byte[shape.Elements * 2];
        new Random(3).NextBytes(kv);
        var payload = new ArrayBufferWriter<byte>();
        RawCodec.Instance.Encode(kv, shape, DType.BFloat16, 0, 0, new ArrayBufferWriter<byte>(), payload);
        header = new ChunkHeader
        {
            Codec = CodecId.Raw,
            DType = DType.BFloat16,
            Key = new ChunkKey(new Hash256(5, 6, 7, 8)),
            Model = new ModelFingerprint(new Hash256(1, 2, 3, 4)),
            TokenStart = 32,
            Shape = shape,
        };
        var output = new ArrayBufferWriter<byte>();
        RawCodec.Instance.WriteContainer(header, [], payload.WrittenSpan, groupLayers, output);
        string path = Path.Combine(_dir, "chunk.kvf");
        File.WriteAllBytes(path, output.WrittenSpan.ToArray());
        return path;
    }
}
