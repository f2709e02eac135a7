namespace KvFetcher.Cli.Tests;

/// <summary>
/// What <c>kvfetch demo</c> and <c>warm</c> store, and that they finish: without the video shim they leave video out with
/// one warning line (before, they hung at "storing 13 chunks x 4 variants: 3%"), and the demo's cold pass is a full
/// prefill whatever the store already holds.
/// </summary>
public sealed class PublishingCommandTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("kvfetch-publish-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Warm_VideoLibraryCannotLoad_WarnsOnceAndStoresTheOtherVariants(bool brokenFile)
    {
        string library = Path.Combine(_directory, "lib", "libkvfvideo.so");
        if (brokenFile)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(library)!);
            File.WriteAllText(library, "not a shared library");
        }

        string context = ShortDocument();
        (int exit, string output, string error) = KvFetchProcess.RunWith(
            new Dictionary<string, string> { ["KVFETCH_VIDEO_LIBRARY"] = library },
            "warm", "--file", context, "--store", Path.Combine(_directory, "store"), "--ladder", "raw,exact,video8,video4", "--engine", "cpu");

        Assert.True(exit == 0, error + output);
        string warning = Assert.Single(error.Split('\n'), l => l.StartsWith("kvfetch: warning: ", StringComparison.Ordinal));
        Assert.Contains("video8, video4", warning, StringComparison.Ordinal);
        Assert.All(error.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => Assert.StartsWith("kvfetch: ", l, StringComparison.Ordinal)); // one line each
        Assert.Contains(library, warning, StringComparison.Ordinal);
        Assert.Contains("as raw, exact", output, StringComparison.Ordinal);
        Assert.Contains("; 0 failed", output, StringComparison.Ordinal);
        Assert.NotEmpty(Directory.EnumerateFiles(Path.Combine(_directory, "store"), "*exact*", SearchOption.AllDirectories));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(_directory, "store"), "*video*", SearchOption.AllDirectories));
    }

    [Fact]
    public void Demo_VideoLibraryMissing_CompletesWithoutVideo()
    {
        (int exit, string output, string error) = KvFetchProcess.RunWith(
            new Dictionary<string, string> { ["KVFETCH_VIDEO_LIBRARY"] = Path.Combine(_directory, "none", "libkvfvideo.so") },
            "demo", "--document", ShortDocument(), "--max-tokens", "4", "--engine", "cpu");

        Assert.True(exit == 0, error + output);
        Assert.Single(error.Split('\n'), l => l.StartsWith("kvfetch: warning: ", StringComparison.Ordinal));
        Assert.Contains("ladder raw, exact", output, StringComparison.Ordinal);
        Assert.Contains("accuracy floor: ", output, StringComparison.Ordinal); // the floor's verdict, one line per variant
        Assert.Contains("  exact: allowed (lossless)", output, StringComparison.Ordinal);
        Assert.Contains("answers identical to the full prefill's: yes", string.Join(' ', output.Split(default(char[]), StringSplitOptions.RemoveEmptyEntries)), StringComparison.Ordinal);
    }

    [Fact]
    public void Demo_StoreAlreadyHoldsTheDocument_ColdPassIsAFullPrefill()
    {
        string store = Path.Combine(_directory, "store");
        string document = ShortDocument();
        string[] args = ["demo", "--store", store, "--document", document, "--max-tokens", "4", "--engine", "cpu"];
        (int first, _, string firstError) = KvFetchProcess.Run(args);
        Assert.True(first == 0, firstError);

        (int exit, string output, string error) = KvFetchProcess.Run(args);

        Assert.True(exit == 0, error);
        string cold = Assert.Single(output.Split('\n'), l => l.StartsWith("cold", StringComparison.Ordinal));
        Assert.Contains("cold (compute): lookup found 0 of", cold, StringComparison.Ordinal);
        Assert.Contains("restored 0", cold, StringComparison.Ordinal);
        string warm = Assert.Single(output.Split('\n'), l => l.StartsWith("warm", StringComparison.Ordinal));
        Assert.DoesNotContain("lookup found 0 of", warm, StringComparison.Ordinal);
    }

    /// <summary>The start of the bundled demo document (about 900 tokens: three chunks), so each run takes seconds.</summary>
    private string ShortDocument()
    {
        string path = Path.Combine(_directory, "document.txt");
        if (!File.Exists(path))
        {
            File.WriteAllText(path, File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "demo", "document.txt"))[..4000]);
        }

        return path;
    }
}
