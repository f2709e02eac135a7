using KvFetcher.Core.Keys;
using KvFetcher.Fetch.Calibration;
using KvFetcher.Tests;

namespace KvFetcher.Fetch.Tests.Calibration;

public sealed class CalibrationProfileTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("kvf-profile-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void SaveLoad_Profile_RoundTrips()
    {
        CalibrationProfile profile = TestProfiles.Of(new ModelFingerprint(new Hash256(9, 8, 7, 6)), ("video8", 0.9975, 0.0012), ("cachegen2", 0.8, -0.001));
        string path = CalibrationProfile.PathIn(_directory);

        profile.Save(path);
        CalibrationProfile loaded = CalibrationProfile.Load(path);

        Assert.Equal(profile.ModelFingerprint, loaded.ModelFingerprint);
        Assert.Equal(profile.Evaluation.Documents, loaded.Evaluation.Documents);
        Assert.Equal(profile.Evaluation with { Documents = loaded.Evaluation.Documents }, loaded.Evaluation);
        Assert.Equal(profile.Variants, loaded.Variants);
        Assert.True(loaded.Matches(new ModelFingerprint(new Hash256(9, 8, 7, 6))));
        Assert.Equal(0.9975, loaded.Find(KvVariant.Parse("video8"))!.Top1Agreement);
        Assert.Contains("\"top1_agreement\"", File.ReadAllText(path), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("{ not json")]
    [InlineData("{\"format\": 2, \"model_fingerprint\": \"ab\", \"evaluation\": {}, \"variants\": []}")]
    [InlineData("[]")]
    public void TryLoadFrom_NotAProfile_NullWithTheReason(string text)
    {
        File.WriteAllText(CalibrationProfile.PathIn(_directory), text);

        CalibrationProfile? profile = CalibrationProfile.TryLoadFrom(_directory, out string? problem);

        Assert.Null(profile);
        Assert.Contains("unusable", problem, StringComparison.Ordinal);
        Assert.Throws<InvalidDataException>(() => CalibrationProfile.Load(CalibrationProfile.PathIn(_directory)));
    }

    [Fact]
    public void TryLoadFrom_Missing_NullAndSaysHowToCalibrate()
    {
        Assert.Null(CalibrationProfile.TryLoadFrom(_directory, out string? problem));
        Assert.Contains("kvfetch calibrate", problem, StringComparison.Ordinal);
    }
}
