using KvFetcher.Codecs.Transform;
using KvFetcher.Core.Keys;
using KvFetcher.Fetch.Calibration;

namespace KvFetcher.Cli.Tests;

/// <summary><c>kvfetch calibrate</c>: measures a model's variants and writes the profile the accuracy floor trusts.</summary>
public sealed class CalibrateCommandTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("kvf-calibrate-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void Calibrate_TinyModel_WritesAProfileOfThatModelNextToIt()
    {
        string root = RepositoryRoot();
        string model = Path.Combine(_directory, "model");
        Directory.CreateDirectory(model);
        foreach (string file in Directory.GetFiles(Path.Combine(root, "tests", "TestData", "models", "tiny-llama3-rope")))
        {
            File.Copy(file, Path.Combine(model, Path.GetFileName(file)));
        }

        (int exit, string output, string error) = KvFetchProcess.Run("calibrate", "--model", model, "--documents", Path.Combine(root, "data", "heldout"),
            "--max-documents", "1", "--prefix", "256", "--continuation", "32", "--greedy", "4", "--variants", "raw,cachegen2,kvtc3", "--threads", "1",
            "--kvtc-documents", "1");

        Assert.True(exit == 0, error + output);
        CalibrationProfile profile = CalibrationProfile.Load(CalibrationProfile.PathIn(model));
        Assert.Equal(["raw", "cachegen2", "kvtc3"], profile.Variants.Select(v => v.Variant));
        Assert.True(Hash256.TryParse(profile.ModelFingerprint, out Hash256 fingerprint));
        Assert.NotNull(KvtcTransform.TryLoadFrom(model, new ModelFingerprint(fingerprint), out string? problem));
        Assert.Null(problem);
        Assert.Equal(1.0, profile.Variants[0].Top1Agreement);
        Assert.Single(profile.Evaluation.Documents);
        Assert.Contains("raw: allowed (lossless)", output, StringComparison.Ordinal);
        Assert.Contains("matches the model", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Calibrate_PrefixNotWholeChunks_FailsWithOneLine()
    {
        (int exit, _, string error) = KvFetchProcess.Run("calibrate", "--prefix", "300");

        Assert.Equal(1, exit);
        Assert.Contains("whole number", error, StringComparison.Ordinal);
    }

    private static string RepositoryRoot()
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "KvFetcher.slnx")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException("No checkout above the test binaries.");
    }
}
