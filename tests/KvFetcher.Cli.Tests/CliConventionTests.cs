using KvFetcher.Benchmarking;
using KvFetcher.Server;

namespace KvFetcher.Cli.Tests;

/// <summary>
/// The CLI's conventions: a usage error exits 2 with the error and a one-line hint to the command's help (never the
/// whole help, never a stack trace); a failure at run time exits 1 with one line; a store that wants a token says so.
/// </summary>
public sealed class CliConventionTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("kvfetch-conventions-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Theory]
    [InlineData("demo", "--bandwidth", "fast")]
    [InlineData("demo", "--strategy", "fastest")]
    [InlineData("generate", "--prompt", "x", "--max-tokens", "-5")]
    [InlineData("generate", "--prompt", "x", "--max-tokens", "many")]
    [InlineData("generate", "--prompt", "x", "--no-such-option")]
    [InlineData("bench", "--contexts", "100")]
    [InlineData("bench", "--bandwidths", "10,fast")]
    public void Command_BadArguments_UsageErrorExit2WithHintToHelp(params string[] args)
    {
        (int exit, string output, string error) = KvFetchProcess.Run(args);

        Assert.True(exit == 2, $"exit {exit}: {error}{output}");
        string[] lines = error.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.True(lines.Length == 2, error);
        Assert.StartsWith("kvfetch: ", lines[0], StringComparison.Ordinal);
        Assert.Equal($"Run 'kvfetch {args[0]} --help' for usage.", lines[1]);
        Assert.DoesNotContain("Usage:", output + error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Command_NoSubcommand_UsageErrorWithRootHint()
    {
        (int exit, _, string error) = KvFetchProcess.Run();

        Assert.Equal(2, exit);
        Assert.EndsWith("Run 'kvfetch --help' for usage.", error.TrimEnd(), StringComparison.Ordinal);
    }

    [Fact]
    public void Bench_ContextsNotMultipleOf256_ErrorSaysWhy()
    {
        (_, _, string error) = KvFetchProcess.Run("bench", "--contexts", "2048,100");

        Assert.Contains("multiples of 256", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Warm_TokenProtectedStoreWithoutToken_SaysTheStoreWantsATokenAndExits1()
    {
        await using StoreServer server = await StoreServer.StartAsync(new StoreServerOptions
        {
            DataDirectory = Path.Combine(_directory, "store"),
            Token = "cli-test-token-0123456789",
            Urls = ["http://127.0.0.1:0"],
        }, TestContext.Current.CancellationToken);
        string document = Path.Combine(_directory, "document.txt");
        await File.WriteAllTextAsync(document, (await File.ReadAllTextAsync(Path.Combine(AppContext.BaseDirectory, "demo", "document.txt"), TestContext.Current.CancellationToken))[..2000],
            TestContext.Current.CancellationToken);

        (int exit, string output, string error) = KvFetchProcess.Run("warm", "--file", document, "--store", server.Addresses[0].ToString(), "--engine", "cpu");

        Assert.True(exit == 1, $"exit {exit}: {error}{output}");
        string line = Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("kvfetch: error: ", StringComparison.Ordinal));
        Assert.Contains("wants a token", line, StringComparison.Ordinal);
        Assert.Contains("$KVFETCH_TOKEN", line, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(50, 100, "50.0% lower TTFT")]
    [InlineData(159, 100, "59.0% higher TTFT (slower)")]
    [InlineData(113.9, 100, "13.9% higher TTFT (slower)")]
    [InlineData(100, 100, "the same TTFT")]
    public void Versus_OursAgainstOther_WordedTheRightWayRound(double ours, double other, string expected)
    {
        Assert.Equal(expected, TtftReport.Versus(ours, other));
        Assert.DoesNotContain('-', TtftReport.Versus(ours, other));
    }

    [Theory]
    [InlineData(2.5, "2.50x faster")]
    [InlineData(0.8, "1.25x slower")]
    public void Speedup_Ratio_WordedTheRightWayRound(double ratio, string expected) => Assert.Equal(expected, TtftReport.Speedup(ratio));
}
