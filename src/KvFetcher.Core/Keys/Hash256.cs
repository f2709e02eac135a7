using System.Buffers.Binary;
using System.Globalization;

namespace KvFetcher.Core.Keys;

/// <summary>A 256-bit digest (SHA-256), compared by value; written as 64 lower-case hex digits.</summary>
public readonly record struct Hash256(ulong A, ulong B, ulong C, ulong D)
{
    public const int Size = 32;

    /// <summary>Reads 32 bytes (big-endian words, so the hex form equals the digest's usual hex).</summary>
    public static Hash256 Read(ReadOnlySpan<byte> bytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bytes.Length, Size, nameof(bytes));
        return new Hash256(
            BinaryPrimitives.ReadUInt64BigEndian(bytes),
            BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]),
            BinaryPrimitives.ReadUInt64BigEndian(bytes[16..]),
            BinaryPrimitives.ReadUInt64BigEndian(bytes[24..]));
    }

    /// <summary>Writes the 32 bytes.</summary>
    public void Write(Span<byte> destination)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(destination.Length, Size, nameof(destination));
        BinaryPrimitives.WriteUInt64BigEndian(destination, A);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], B);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], C);
        BinaryPrimitives.WriteUInt64BigEndian(destination[24..], D);
    }

    /// <summary>Parses 64 hex digits.</summary>
    public static bool TryParse(string? hex, out Hash256 value)
    {
        value = default;
        if (hex is null || hex.Length != 2 * Size)
        {
            return false;
        }

        Span<byte> bytes = stackalloc byte[Size];
        for (int i = 0; i < Size; i++)
        {
            if (!byte.TryParse(hex.AsSpan(2 * i, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out bytes[i]))
            {
                return false;
            }
        }

        value = Read(bytes);
        return true;
    }

    public override string ToString() => $"{A:x16}{B:x16}{C:x16}{D:x16}";
}
