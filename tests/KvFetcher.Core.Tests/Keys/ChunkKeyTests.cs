using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using KvFetcher.Core.Keys;

namespace KvFetcher.Core.Tests.Keys;

public class ChunkKeyTests
{
    private static readonly ModelFingerprint s_model = new(new Hash256(0x0102030405060708, 9, 10, 11));
    private static readonly int[] s_tokens = Enumerable.Range(0, 1000).Select(i => (i * 7919) % 8192).ToArray();

    [Fact]
    public void ComputeChain_MatchesIndependentSha256OfDocumentedFields()
    {
        ChunkKey[] keys = ChunkKey.ComputeChain(s_model, "tenant", s_tokens, 256);
        Assert.Equal(3, keys.Length); // 1000 tokens: three full chunks, the partial one has no key

        // SHA-256("kvfetch/chunk-key/v1" | previous key | model | salt length, salt | token count | tokens), all LE.
        byte[] previous = new byte[32];
        for (int i = 0; i < keys.Length; i++)
        {
            var buffer = new List<byte>(Encoding.ASCII.GetBytes("kvfetch/chunk-key/v1"));
            buffer.AddRange(previous);
            byte[] model = new byte[32];
            s_model.Value.Write(model);
            buffer.AddRange(model);
            buffer.AddRange(BitConverter.GetBytes(6));
            buffer.AddRange(Encoding.UTF8.GetBytes("tenant"));
            buffer.AddRange(BitConverter.GetBytes(256));
            foreach (int token in s_tokens.AsSpan(i * 256, 256))
            {
                byte[] t = new byte[4];
                BinaryPrimitives.WriteInt32LittleEndian(t, token);
                buffer.AddRange(t);
            }

            byte[] digest = SHA256.HashData(buffer.ToArray());
            Assert.Equal(Convert.ToHexString(digest).ToLowerInvariant(), keys[i].ToString());
            previous = digest;
        }
    }

    [Fact]
    public void ComputeChain_OtherTenantOrModelOrChunkSize_AllKeysDiffer()
    {
        ChunkKey[] baseline = ChunkKey.ComputeChain(s_model, "a", s_tokens, 100);
        ChunkKey[] tenant = ChunkKey.ComputeChain(s_model, "b", s_tokens, 100);
        ChunkKey[] model = ChunkKey.ComputeChain(new ModelFingerprint(new Hash256(1, 9, 10, 11)), "a", s_tokens, 100);
        ChunkKey[] size = ChunkKey.ComputeChain(s_model, "a", s_tokens, 50);
        Assert.Empty(baseline.Intersect(tenant));
        Assert.Empty(baseline.Intersect(model));
        Assert.Empty(baseline.Intersect(size));
    }

    [Fact]
    public void ComputeChain_TokenChangedInChunk1_Chunk0KeptLaterChanged()
    {
        int[] changed = (int[])s_tokens.Clone();
        changed[150]++;
        ChunkKey[] a = ChunkKey.ComputeChain(s_model, "", s_tokens, 100);
        ChunkKey[] b = ChunkKey.ComputeChain(s_model, "", changed, 100);
        Assert.Equal(a[0], b[0]);
        for (int i = 1; i < a.Length; i++)
        {
            Assert.NotEqual(a[i], b[i]);
        }
    }

    [Fact]
    public void Hash256_HexRoundTrip()
    {
        ChunkKey key = ChunkKey.ComputeChain(s_model, "x", s_tokens, 10)[3];
        Assert.True(Hash256.TryParse(key.ToString(), out Hash256 parsed));
        Assert.Equal(key.Value, parsed);
        Assert.False(Hash256.TryParse("zz" + key.ToString()[2..], out _));
        Assert.False(Hash256.TryParse(key.ToString()[1..], out _));
    }
}
