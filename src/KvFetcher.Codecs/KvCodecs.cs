using System.Globalization;
using KvFetcher.Codecs.CacheGen;
using KvFetcher.Codecs.Exact;
using KvFetcher.Codecs.Raw;
using KvFetcher.Codecs.Transform;
using KvFetcher.Codecs.Video;
using KvFetcher.Core;

namespace KvFetcher.Codecs;

/// <summary>The codecs KvFetcher knows, by id and by name.</summary>
public static class KvCodecs
{
    private static readonly IKvCodec[] s_all = [RawCodec.Instance, ExactCodec.Instance, CacheGenCodec.Instance, VideoCodec.Instance, TransformCodec.Instance, CacheGenPaperCodec.Instance];

    /// <summary>Every available codec.</summary>
    public static IReadOnlyList<IKvCodec> All => s_all;

    /// <summary>
    /// The codecs that cannot run in this process, each with its reason (see <see cref="IKvCodec.Unavailable"/>);
    /// checked when asked (a native library is loaded at most once).
    /// </summary>
    public static IReadOnlyList<(IKvCodec Codec, string Reason)> Unavailable() =>
        [.. s_all.Select(c => (Codec: c, Reason: c.Unavailable)).Where(p => p.Reason is not null).Select(p => (p.Codec, p.Reason!))];

    /// <summary>The codec with id <paramref name="id"/>; a container naming an unavailable codec is invalid data.</summary>
    public static IKvCodec Get(CodecId id) =>
        s_all.FirstOrDefault(c => c.Id == id) ?? throw new InvalidKvDataException($"Codec {id} is not available in this build.");

    /// <summary>The codec named <paramref name="name"/> (raw, exact, cachegen, video, kvtc, cachegenp).</summary>
    public static IKvCodec Get(string name) =>
        CodecIdExtensions.TryParse(name, out CodecId id) && s_all.FirstOrDefault(c => c.Id == id) is { } codec
            ? codec
            : throw new ArgumentException($"Unknown codec '{name}'; available: {string.Join(", ", s_all.Select(c => c.Name))}.", nameof(name));

    /// <summary>
    /// Parses a variant's text, a codec name then its level: <c>raw</c>, <c>exact</c>, <c>cachegen0</c>..<c>cachegen2</c>,
    /// <c>video4</c>..<c>video12</c>, <c>kvtc0</c>..<c>kvtc7</c>, <c>cachegenp0</c>..<c>cachegenp6</c>; without a level, the codec's default.
    /// </summary>
    /// <exception cref="ArgumentException">An unknown codec, or a level the codec does not have.</exception>
    public static (IKvCodec Codec, int Level) ParseVariant(string text)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(text);
        int split = text.Length;
        while (split > 0 && char.IsAsciiDigit(text[split - 1]))
        {
            split--;
        }

        IKvCodec codec = Get(text[..split]);
        int level = split == text.Length ? codec.DefaultLevel
            : int.TryParse(text.AsSpan(split), NumberStyles.None, CultureInfo.InvariantCulture, out int parsed) ? parsed : -1;
        if (!codec.Levels.Contains(level))
        {
            throw new ArgumentException($"'{text}': {codec.Name} has levels {string.Join(", ", codec.Levels)}.", nameof(text));
        }

        return (codec, level);
    }

    /// <summary>The text of a variant (what <see cref="ParseVariant"/> reads): the codec's name, then the level unless the codec has only one.</summary>
    public static string VariantName(CodecId codec, int level)
    {
        IKvCodec kvCodec = Get(codec);
        return kvCodec.Levels.Count == 1 ? kvCodec.Name : kvCodec.Name + level.ToString(CultureInfo.InvariantCulture);
    }
}
