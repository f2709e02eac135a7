using System.Diagnostics.CodeAnalysis;
using KvFetcher.Core;
using KvFetcher.Core.Keys;

namespace KvFetcher.Store;

/// <summary>
/// The name of one stored object: 1 to 128 characters of <c>[A-Za-z0-9._-]</c>, not starting with '.' or '-'. Safe as a
/// file name, a URL path segment and a Redis key without escaping, so a key can never reach outside its store.
/// A chunk's quality variants are named <c>{chunk key hex}.{codec}{level}</c> (<see cref="ForChunk"/>).
/// </summary>
public readonly record struct ObjectKey
{
    public const int MaxLength = 128;

    private ObjectKey(string value) => Value = value;

    public string Value { get; }

    /// <summary>The key of one quality variant of a chunk, e.g. <c>3f…a1.video1</c>.</summary>
    public static ObjectKey ForChunk(ChunkKey chunk, CodecId codec, byte level) =>
        new($"{chunk}.{codec.ToName()}{level}");

    public static bool TryParse([NotNullWhen(true)] string? value, out ObjectKey key)
    {
        key = default;
        if (!IsValid(value))
        {
            return false;
        }

        key = new ObjectKey(value);
        return true;
    }

    /// <summary>Parses a key; throws <see cref="ArgumentException"/> naming the problem for an invalid one.</summary>
    public static ObjectKey Parse(string? value) =>
        TryParse(value, out ObjectKey key)
            ? key
            : throw new ArgumentException($"Invalid object key '{value}': 1-{MaxLength} characters of [A-Za-z0-9._-], not starting with '.' or '-'.", nameof(value));

    public static bool IsValid([NotNullWhen(true)] string? value)
    {
        if (string.IsNullOrEmpty(value) || value.Length > MaxLength || value[0] is '.' or '-')
        {
            return false;
        }

        foreach (char c in value)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
            {
                return false;
            }
        }

        return true;
    }

    public override string ToString() => Value ?? string.Empty;
}
