using System.Buffers.Binary;
using System.IO.Hashing;

namespace KvFetcher.Store.Redis;

/// <summary>
/// The head of an object's manifest key, written last by a put. Little-endian:
/// <code>
/// offset size  field
///      0    8  magic "KVFRMAN1"
///      8    8  object length
///     16    4  part size
///     20    4  part count (0: the object follows this header inline, in the same key)
///     24    8  version: random per put; its hex names this version's part keys
///     32    8  the object's checksum (its container's trailing XxHash3-64)
///     40   16  reserved, zero
///     56    8  XxHash3-64 of bytes [0, 56)
/// </code>
/// The Lua scripts in <see cref="RedisKvStore"/> read the magic, part count and version at these offsets too.
/// </summary>
internal readonly record struct RedisManifest(long Length, int PartSize, int PartCount, ulong Version, ulong Checksum)
{
    public const int Size = 64;

    /// <summary>The most parts a manifest may name (the scripts refuse to walk more).</summary>
    public const int MaxParts = 65536;

    private const int HashedSize = 56;

    private static ReadOnlySpan<byte> Magic => "KVFRMAN1"u8;

    public bool IsInline => PartCount == 0;

    /// <summary>Bytes of part <paramref name="index"/>.</summary>
    public int PartLength(int index) =>
        index < PartCount - 1 ? PartSize : (int)(Length - ((long)PartSize * (PartCount - 1)));

    /// <summary>The version's hex, as it appears in part keys.</summary>
    public string VersionHex()
    {
        Span<byte> raw = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(raw, Version);
        return Convert.ToHexStringLower(raw);
    }

    public void Write(Span<byte> destination)
    {
        Span<byte> head = destination[..Size];
        head.Clear();
        Magic.CopyTo(head);
        BinaryPrimitives.WriteInt64LittleEndian(head[8..], Length);
        BinaryPrimitives.WriteInt32LittleEndian(head[16..], PartSize);
        BinaryPrimitives.WriteInt32LittleEndian(head[20..], PartCount);
        BinaryPrimitives.WriteUInt64LittleEndian(head[24..], Version);
        BinaryPrimitives.WriteUInt64LittleEndian(head[32..], Checksum);
        BinaryPrimitives.WriteUInt64LittleEndian(head[HashedSize..], XxHash3.HashToUInt64(head[..HashedSize]));
    }

    /// <summary>
    /// Reads the manifest at the start of <paramref name="value"/> (a manifest key's value) and checks it: magic,
    /// hash, and fields that agree with each other and with the bytes stored inline. False for anything else.
    /// </summary>
    public static bool TryRead(ReadOnlySpan<byte> value, out RedisManifest manifest)
    {
        manifest = default;
        if (value.Length < Size || !value.StartsWith(Magic)
            || BinaryPrimitives.ReadUInt64LittleEndian(value[HashedSize..]) != XxHash3.HashToUInt64(value[..HashedSize]))
        {
            return false;
        }

        long length = BinaryPrimitives.ReadInt64LittleEndian(value[8..]);
        int partSize = BinaryPrimitives.ReadInt32LittleEndian(value[16..]);
        int partCount = BinaryPrimitives.ReadInt32LittleEndian(value[20..]);
        ulong version = BinaryPrimitives.ReadUInt64LittleEndian(value[24..]);
        ulong checksum = BinaryPrimitives.ReadUInt64LittleEndian(value[32..]);
        if (length is < 0 or > int.MaxValue || partSize <= 0 || partCount is < 0 or > MaxParts)
        {
            return false;
        }

        bool consistent = partCount == 0
            ? value.Length - Size == length
            : value.Length == Size && (partCount - 1L) * partSize < length && length <= (long)partCount * partSize;
        if (!consistent)
        {
            return false;
        }

        manifest = new RedisManifest(length, partSize, partCount, version, checksum);
        return true;
    }
}
