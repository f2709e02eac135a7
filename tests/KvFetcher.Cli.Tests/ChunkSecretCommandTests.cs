namespace KvFetcher.Cli.Tests;

/// <summary>
/// <c>kvfetch secret new</c> and <c>--chunk-secret</c>: chunks sealed under one deployment secret are restored by engines
/// holding it and are misses (computed, same answer) for engines holding another.
/// </summary>
public sealed class ChunkSecretCommandTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("kvfetch-secret-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void SecretNew_WritesMode600_RefusesToOverwrite()
    {
        string secret = Path.Combine(_directory, "secret");
        (int exit, string output, string error) = KvFetchProcess.Run("secret", "new", secret);
        Assert.True(exit == 0, error);
        Assert.Contains("mode 600", output, StringComparison.Ordinal);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(secret));

        (int again, _, string againError) = KvFetchProcess.Run("secret", "new", secret);
        Assert.Equal(1, again);
        Assert.StartsWith("kvfetch: error: ", Assert.Single(againError.Split('\n', StringSplitOptions.RemoveEmptyEntries)), StringComparison.Ordinal);
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void Demo_WithChunkSecret_SealedChunksRestoredAndAnswerIdentical()
    {
        string secret = Path.Combine(_directory, "secret");
        Assert.Equal(0, KvFetchProcess.Run("secret", "new", secret).ExitCode);
        string document = Path.Combine(_directory, "document.txt");
        File.WriteAllText(document, File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "demo", "document.txt"))[..4000]);

        (int exit, string output, string error) = KvFetchProcess.Run(
            "demo", "--store", Path.Combine(_directory, "store"), "--document", document, "--max-tokens", "4", "--engine", "cpu", "--strategy", "fetch-raw",
            "--chunk-secret", secret);

        Assert.True(exit == 0, error);
        Assert.Contains($"sealed and verified with the secret in {secret}", error, StringComparison.Ordinal);
        Assert.True(Restored(output) > 0, output);
        Assert.Contains("answers identical to the full prefill's: yes", string.Join(' ', output.Split(default(char[]), StringSplitOptions.RemoveEmptyEntries)), StringComparison.Ordinal);
        string container = Directory.EnumerateFiles(Path.Combine(_directory, "store"), "*raw*", SearchOption.AllDirectories).First();
        (int inspected, string header, _) = KvFetchProcess.Run("inspect", container);
        Assert.Equal(0, inspected);
        Assert.Contains("authenticated", header, StringComparison.Ordinal);
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void Warm_SecretReadableByOthers_OneLineErrorNothingComputed()
    {
        string secret = Path.Combine(_directory, "open");
        File.WriteAllBytes(secret, new byte[32]);
        File.SetUnixFileMode(secret, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        string document = Path.Combine(_directory, "document.txt");
        File.WriteAllText(document, "A short context.");

        (int exit, _, string error) = KvFetchProcess.Run("warm", "--file", document, "--store", Path.Combine(_directory, "store"), "--chunk-secret", secret, "--engine", "cpu");

        Assert.Equal(1, exit);
        string line = Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("chmod 600", line, StringComparison.Ordinal);
    }

    private static string WarmLine(string output) => Assert.Single(output.Split('\n'), l => l.StartsWith("warm", StringComparison.Ordinal));

    private static int Restored(string output) =>
        int.Parse(System.Text.RegularExpressions.Regex.Match(WarmLine(output), @"restored (\d+)").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
}
