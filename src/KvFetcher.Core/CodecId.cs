namespace KvFetcher.Core;

/// <summary>The codec of a chunk container; the numeric value is part of the on-disk format.</summary>
public enum CodecId : byte
{
    /// <summary>The 16/32-bit values as stored.</summary>
    Raw = 0,

    /// <summary>Bit-exact lossless compression of the stored values.</summary>
    Exact = 1,

    /// <summary>The CacheGen baseline (LMCache): per-token quantization and arithmetic coding.</summary>
    CacheGen = 2,

    /// <summary>KVFetcher: per-channel quantization, codec-friendly layout, lossless HEVC.</summary>
    Video = 3,

    /// <summary>KVTC-style transform coding: a per-model PCA, bit allocation by variance, rANS-coded coefficients.</summary>
    Kvtc = 4,

    /// <summary>CacheGen as its paper describes it: anchor tokens and deltas, layer-wise bins, per-(layer, channel) arithmetic coding.</summary>
    CacheGenP = 5,
}

/// <summary>The names of <see cref="CodecId"/> values, the one spelling used in object keys, variants and messages.</summary>
public static class CodecIdExtensions
{
    /// <summary>The lower-case name: raw, exact, cachegen, video, kvtc, cachegenp.</summary>
    public static string ToName(this CodecId codec) => codec switch
    {
        CodecId.Raw => "raw",
        CodecId.Exact => "exact",
        CodecId.CacheGen => "cachegen",
        CodecId.Video => "video",
        CodecId.Kvtc => "kvtc",
        CodecId.CacheGenP => "cachegenp",
        _ => throw new ArgumentOutOfRangeException(nameof(codec), codec, "Unknown codec id."),
    };

    /// <summary>The codec named <paramref name="name"/> (case-insensitive), or false.</summary>
    public static bool TryParse(ReadOnlySpan<char> name, out CodecId codec)
    {
        foreach (CodecId candidate in Enum.GetValues<CodecId>())
        {
            if (name.Equals(candidate.ToName(), StringComparison.OrdinalIgnoreCase))
            {
                codec = candidate;
                return true;
            }
        }

        codec = default;
        return false;
    }
}
