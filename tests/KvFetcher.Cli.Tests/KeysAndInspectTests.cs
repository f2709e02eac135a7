using System.Buffers;
using KvFetcher.Codecs;
using KvFetcher.Codecs.Containers;
using KvFetcher.Codecs.Raw;
using KvFetcher.Core;
using KvFetcher.Core.Keys;
using KvFetcher.Engine;

namespace KvFetcher.Cli.Tests;

public sealed class KeysAndInspectTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvfetch-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string BundledModel => Path.Combine(AppContext.BaseDirectory, "models", "kvf-pydoc-16m");

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

    private string WriteContainer(out ChunkHeader header)
    {
        var shape = new KvShape(2, 8, 2, 16);
        var kv = new byte[shape.Elements * 2];
        new Random(3).NextBytes(kv);
        var payload = new ArrayBufferWriter<byte>();
        RawCodec.Instance.Encode(kv, shape, DType.BFloat16, 0, new ArrayBufferWriter<byte>(), payload);
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
        ChunkContainer.Write(header, [], payload.WrittenSpan, output);
        string path = Path.Combine(_dir, "chunk.kvf");
        File.WriteAllBytes(path, output.WrittenSpan.ToArray());
        return path;
    }
}
