using KvFetcher.Codecs;
using KvFetcher.Core;

namespace KvFetcher.Fetch;

/// <summary>
/// One stored form of a chunk: a codec and its quality level, e.g. <c>exact</c>, <c>video8</c>, <c>cachegen0</c>.
/// A chunk is stored as several variants (the ladder) so a fetcher can pick one per chunk.
/// </summary>
public readonly record struct KvVariant(CodecId Codec, byte Level)
{
    public static KvVariant Raw => new(CodecId.Raw, 0);

    public static KvVariant Exact => new(CodecId.Exact, 0);

    public IKvCodec GetCodec() => KvCodecs.Get(Codec);

    /// <summary>Whether a restore from this variant is bit-identical to the computed KV.</summary>
    public bool IsLossless => GetCodec().IsLossless(Level);

    /// <summary>
    /// An ordering of accuracy: lossless variants first, then more bits. Video levels are bits; cachegen levels 0/1/2
    /// are 32/16/8 bins (5/4/3 bits); kvtc levels 0..7 spend 5 down to 2 bits per value; cachegenp levels 0..6 code
    /// the first third of the layers' deltas at 8 down to 4 bits.
    /// </summary>
    public int Rank => IsLossless ? 100 : Codec switch
    {
        CodecId.Video => Level,
        CodecId.CacheGen => 5 - Level,
        CodecId.Kvtc => 8 - Level,
        CodecId.CacheGenP => 7 - Level,
        _ => 0,
    };

    /// <summary>Parses <c>raw</c>, <c>exact</c>, <c>cachegen0</c>..<c>cachegen2</c>, <c>video4</c>..<c>video12</c> (<see cref="KvCodecs.ParseVariant"/>).</summary>
    public static KvVariant Parse(string text)
    {
        (IKvCodec codec, int level) = KvCodecs.ParseVariant(text);
        return new KvVariant(codec.Id, (byte)level);
    }

    public override string ToString() => KvCodecs.VariantName(Codec, Level);
}
