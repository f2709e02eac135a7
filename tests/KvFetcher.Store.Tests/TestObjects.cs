using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Core.Keys;

namespace KvFetcher.Store.Tests;

/// <summary>
/// Real, intact chunk containers for store tests. Each container is self-identifying: its chunk key field is
/// <see cref="ChunkKeyOf"/> of the object key it is stored under and its token start is the seed, so a test can tell
/// from the bytes alone which object (and which version of it) a get returned.
/// </summary>
internal static class TestObjects
{
    /// <summary>The model fingerprint every test container carries.</summary>
    public static readonly ModelFingerprint Model = new(new Hash256(0x6b76_6665_7463_6821, 2, 3, 4));

    /// <summary>
    /// An intact Raw fp16 container for <paramref name="key"/> with exactly <paramref name="payloadBytes"/> payload
    /// bytes drawn from <paramref name="seed"/> (its size is <see cref="SizeOf"/>). The shape is nominal
    /// (1 layer x 1 head x 1 dim, payloadBytes / 4 tokens, at least 1): stores never decode, they only verify.
    /// </summary>
    public static byte[] Container(ObjectKey key, int payloadBytes, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(payloadBytes);
        ArgumentOutOfRangeException.ThrowIfNegative(seed);
        byte[] payload = new byte[payloadBytes];
        new Random(seed).NextBytes(payload);
        var header = new ChunkHeader
        {
            Codec = CodecId.Raw,
            Level = 0,
            DType = DType.Float16,
            Key = ChunkKeyOf(key),
            Model = Model,
            TokenStart = seed,
            Shape = new KvShape(1, Math.Max(1, payloadBytes / 4), 1, 1),
        };
        var output = new ArrayBufferWriter<byte>(SizeOf(payloadBytes));
        ChunkContainer.Write(header, [], payload, output);
        return output.WrittenSpan.ToArray();
    }

    /// <summary>The container size for <paramref name="payloadBytes"/> payload bytes.</summary>
    public static int SizeOf(int payloadBytes) => (int)ChunkContainer.GetSize(0, payloadBytes);

    /// <summary>A chunk-variant object key derived from <paramref name="name"/> (64 hex digits + ".raw0").</summary>
    public static ObjectKey KeyFor(string name) => ObjectKey.ForChunk(new ChunkKey(HashOf(name)), CodecId.Raw, 0);

    /// <summary>The chunk key a test container for <paramref name="key"/> carries: SHA-256 of the key's text.</summary>
    public static ChunkKey ChunkKeyOf(ObjectKey key) => new(HashOf(key.Value));

    /// <summary>
    /// Whether <paramref name="bytes"/> is an intact test container made for <paramref name="key"/>; its seed (token
    /// start) comes back in <paramref name="seed"/>.
    /// </summary>
    public static bool IsFor(ReadOnlySpan<byte> bytes, ObjectKey key, out int seed)
    {
        seed = -1;
        if (!ChunkContainer.IsIntact(bytes))
        {
            return false;
        }

        ChunkHeader header = ChunkContainer.Read(bytes, out _, out _);
        seed = (int)header.TokenStart;
        return header.Key == ChunkKeyOf(key);
    }

    private static Hash256 HashOf(string text) => Hash256.Read(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
}
