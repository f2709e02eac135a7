using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace KvFetcher.Core.Keys;

/// <summary>
/// The identity of one chunk of a context's KV: SHA-256 chained over (the previous chunk's key, the model fingerprint,
/// the tenant salt, the chunk size and the chunk's token ids). Equal keys mean equal prefixes under the same model
/// and tenant, so a key found in a store is a KV that is valid for this position of this prompt. Keys are the same in
/// every process and on every machine (no randomized hashing).
/// </summary>
public readonly record struct ChunkKey(Hash256 Value)
{
    private const string Domain = "kvfetch/chunk-key/v1";

    /// <summary>The key before chunk 0.</summary>
    public static ChunkKey Root => default;

    /// <summary>
    /// Keys of the full chunks of <paramref name="tokens"/> ([0, C), [C, 2C), ...); a trailing partial chunk has none.
    /// </summary>
    public static ChunkKey[] ComputeChain(ModelFingerprint model, string tenantSalt, ReadOnlySpan<int> tokens, int chunkSize)
    {
        ArgumentNullException.ThrowIfNull(tenantSalt);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkSize, 1);
        var keys = new ChunkKey[tokens.Length / chunkSize];
        ChunkKey previous = Root;
        for (int i = 0; i < keys.Length; i++)
        {
            previous = keys[i] = Next(previous, model, tenantSalt, tokens.Slice(i * chunkSize, chunkSize));
        }

        return keys;
    }

    /// <summary>The key of the chunk of <paramref name="chunkTokens"/> that follows <paramref name="previous"/>.</summary>
    public static ChunkKey Next(ChunkKey previous, ModelFingerprint model, string tenantSalt, ReadOnlySpan<int> chunkTokens)
    {
        ArgumentNullException.ThrowIfNull(tenantSalt);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Span<byte> field = stackalloc byte[Hash256.Size];
        hash.AppendData(Encoding.ASCII.GetBytes(Domain));
        previous.Value.Write(field);
        hash.AppendData(field);
        model.Value.Write(field);
        hash.AppendData(field);
        byte[] salt = Encoding.UTF8.GetBytes(tenantSalt);
        BinaryPrimitives.WriteInt32LittleEndian(field, salt.Length);
        hash.AppendData(field[..4]);
        hash.AppendData(salt);
        BinaryPrimitives.WriteInt32LittleEndian(field, chunkTokens.Length);
        hash.AppendData(field[..4]);
        if (BitConverter.IsLittleEndian)
        {
            hash.AppendData(MemoryMarshal.AsBytes(chunkTokens));
        }
        else
        {
            foreach (int token in chunkTokens)
            {
                BinaryPrimitives.WriteInt32LittleEndian(field, token);
                hash.AppendData(field[..4]);
            }
        }

        Span<byte> digest = stackalloc byte[Hash256.Size];
        hash.GetHashAndReset(digest);
        return new ChunkKey(Hash256.Read(digest));
    }

    public override string ToString() => Value.ToString();
}
