using KvFetcher.Core.Keys;
using KvFetcher.Fetch.Calibration;

namespace KvFetcher.Tests;

/// <summary>Calibration profiles for tests: what <c>kvfetch calibrate</c> would write, with chosen numbers.</summary>
internal static class TestProfiles
{
    /// <summary>A profile of the model with <paramref name="fingerprint"/> in which each of <paramref name="variants"/> measured (top-1, perplexity change).</summary>
    public static CalibrationProfile Of(ModelFingerprint fingerprint, params (string Variant, double Top1, double PerplexityChange)[] variants) => new()
    {
        ModelFingerprint = fingerprint.ToString(),
        Model = "test",
        Created = DateTimeOffset.UnixEpoch,
        Evaluation = new ProfileEvaluation(["a.txt"], 256, 64, 8, 256, "f16"),
        Variants = [.. variants.Select(v => new ProfiledVariant(v.Variant, 2.0, v.Top1, v.PerplexityChange, v.Top1, 100, 200))],
    };

    /// <summary>A profile of <paramref name="fingerprint"/>'s model in which every one of <paramref name="variants"/> is perfectly accurate.</summary>
    public static CalibrationProfile Passing(ModelFingerprint fingerprint, params string[] variants) =>
        Of(fingerprint, [.. variants.Select(v => (v, 1.0, 0.0))]);
}
