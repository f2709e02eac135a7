using KvFetcher.Core.Keys;
using KvFetcher.Fetch.Calibration;
using KvFetcher.Tests;

namespace KvFetcher.Fetch.Tests.Calibration;

public sealed class AccuracyFloorTests
{
    private static readonly ModelFingerprint s_model = new(new Hash256(1, 2, 3, 4));
    private static readonly ModelFingerprint s_otherModel = new(new Hash256(5, 6, 7, 8));
    private static readonly KvVariant[] s_ladder = [KvVariant.Raw, KvVariant.Exact, KvVariant.Parse("video8"), KvVariant.Parse("video4"), KvVariant.Parse("cachegen0")];

    [Fact]
    public void Decide_NoProfile_OnlyLosslessVariants()
    {
        FloorDecision decision = AccuracyFloor.Default.Decide(s_ladder, null, s_model, "no calibration profile (missing)");

        Assert.Equal([KvVariant.Raw, KvVariant.Exact], decision.Allowed);
        Assert.False(decision.ProfileTrusted);
        Assert.Contains("missing", decision.ProfileStatus, StringComparison.Ordinal);
    }

    [Fact]
    public void Decide_StaleProfile_OnlyLosslessVariants()
    {
        CalibrationProfile profile = TestProfiles.Passing(s_otherModel, "video8", "video4", "cachegen0");

        FloorDecision decision = AccuracyFloor.Default.Decide(s_ladder, profile, s_model);

        Assert.Equal([KvVariant.Raw, KvVariant.Exact], decision.Allowed);
        Assert.Contains("stale", decision.ProfileStatus, StringComparison.Ordinal);
        Assert.False(decision.Allows(KvVariant.Parse("video8")));
    }

    [Fact]
    public void Decide_TrustedProfile_AllowsOnlyVariantsWithinTheFloor()
    {
        CalibrationProfile profile = TestProfiles.Of(s_model, ("video8", 0.995, 0.002), ("video4", 0.95, 0.001), ("cachegen0", 0.999, 0.02));

        FloorDecision decision = AccuracyFloor.Default.Decide(s_ladder, profile, s_model);

        Assert.Equal([KvVariant.Raw, KvVariant.Exact, KvVariant.Parse("video8")], decision.Allowed);
        Assert.Contains("top-1 below", decision.Verdicts.Single(v => v.Variant == KvVariant.Parse("video4")).Reason, StringComparison.Ordinal);
        Assert.Contains("perplexity change above", decision.Verdicts.Single(v => v.Variant == KvVariant.Parse("cachegen0")).Reason, StringComparison.Ordinal);
        Assert.False(decision.Allows(KvVariant.Parse("video6"))); // not measured
        Assert.Equal(1 + s_ladder.Length, decision.Describe().Count());
    }

    [Fact]
    public void Decide_LosslessFloor_RefusesEvenPerfectLossyVariants()
    {
        CalibrationProfile profile = TestProfiles.Passing(s_model, "video8");

        FloorDecision decision = AccuracyFloor.Lossless.Decide(s_ladder, profile, s_model);

        Assert.Equal([KvVariant.Raw, KvVariant.Exact], decision.Allowed);
    }

    [Fact]
    public void Decide_ExplicitThresholds_AreApplied()
    {
        CalibrationProfile profile = TestProfiles.Of(s_model, ("video8", 0.995, 0.002), ("video4", 0.95, 0.03));

        FloorDecision loose = AccuracyFloor.Parse("top1=0.9,ppl=5%").Decide(s_ladder, profile, s_model);
        FloorDecision strict = AccuracyFloor.Parse("top1=99.9%").Decide(s_ladder, profile, s_model);

        Assert.Equal([KvVariant.Raw, KvVariant.Exact, KvVariant.Parse("video8"), KvVariant.Parse("video4")], loose.Allowed);
        Assert.Equal([KvVariant.Raw, KvVariant.Exact], strict.Allowed);
    }

    [Theory]
    [InlineData("default", 0.99, 0.01, false)]
    [InlineData("lossless", 0.99, 0.01, true)]
    [InlineData("top1=0.995,ppl=0.005", 0.995, 0.005, false)]
    [InlineData("ppl=2%", 0.99, 0.02, false)]
    public void Parse_Text_GivesTheFloor(string text, double top1, double ppl, bool lossless)
    {
        AccuracyFloor floor = AccuracyFloor.Parse(text);

        Assert.Equal(top1, floor.MinTop1Agreement, 9);
        Assert.Equal(ppl, floor.MaxPerplexityChange, 9);
        Assert.Equal(lossless, floor.LosslessOnly);
    }

    [Theory]
    [InlineData("lossy")]
    [InlineData("top1=1.5")]
    [InlineData("top1=-1")]
    [InlineData("ppl")]
    public void Parse_BadText_Throws(string text) => Assert.Throws<ArgumentException>(() => AccuracyFloor.Parse(text));
}
