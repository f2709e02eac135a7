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
}
