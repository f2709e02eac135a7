using KvFetcher.Codecs.CacheGen;
using KvFetcher.Codecs.Exact;
using KvFetcher.Codecs.Raw;
using KvFetcher.Codecs.Video;
using KvFetcher.Core;

namespace KvFetcher.Codecs;

/// <summary>The codecs KvFetcher knows, by id and by name.</summary>
public static class KvCodecs
{
    private static readonly IKvCodec[] s_all = [RawCodec.Instance, ExactCodec.Instance, CacheGenCodec.Instance, VideoCodec.Instance];

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

    /// <summary>The codec named <paramref name="name"/> (raw, exact, cachegen, video).</summary>
    public static IKvCodec Get(string name) =>
        s_all.FirstOrDefault(c => string.Equals(c.Name, name, StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"Unknown codec '{name}'; available: {string.Join(", ", s_all.Select(c => c.Name))}.", nameof(name));
}
