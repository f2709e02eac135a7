using KvFetcher.Core;

namespace KvFetcher.Codecs;

/// <summary>Argument checks shared by the codecs.</summary>
internal static class CodecChecks
{
    public static void Input(ReadOnlySpan<byte> kv, KvShape shape, DType dtype)
    {
        shape.Validate();
        long expected = shape.Elements * dtype.SizeOf();
        if (kv.Length != expected)
        {
            throw new ArgumentException($"KV input holds {kv.Length} bytes; {shape} in {dtype.ToShortName()} is {expected}.", nameof(kv));
        }
    }

    public static void Output(Span<byte> destination, KvShape shape, DType dtype)
    {
        shape.Validate();
        long expected = shape.Elements * dtype.SizeOf();
        if (destination.Length != expected)
        {
            throw new ArgumentException($"Destination holds {destination.Length} bytes; {shape} in {dtype.ToShortName()} is {expected}.", nameof(destination));
        }
    }

    /// <summary>A chunk's first token position: a position in a context, so never negative.</summary>
    public static void TokenStart(long tokenStart) => ArgumentOutOfRangeException.ThrowIfNegative(tokenStart);

    public static void Level(IKvCodec codec, int level)
    {
        if (!codec.Levels.Contains(level))
        {
            throw new InvalidKvDataException($"{codec.Name}: quality level {level} is not one of [{string.Join(", ", codec.Levels)}].");
        }
    }
}
