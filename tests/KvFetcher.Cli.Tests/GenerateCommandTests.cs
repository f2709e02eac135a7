namespace KvFetcher.Cli.Tests;

public class GenerateCommandTests
{
    [Fact]
    public void Generate_BundledModelGreedy_StreamsTextAndReportsSpeeds()
    {
        (int exit, string output, string error) = KvFetchProcess.Run("generate", "--prompt", "The json module", "--max-tokens", "8");
        Assert.True(exit == 0, error);
        Assert.StartsWith("kvf-code-32l", output, StringComparison.Ordinal);
        Assert.Contains("The json module", output, StringComparison.Ordinal);
        Assert.Contains("tok/s", output, StringComparison.Ordinal);
        Assert.Contains("TTFT", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Generate_SameSeed_SameSampledText()
    {
        string[] args = ["generate", "--prompt", "A list is", "--max-tokens", "12", "--temperature", "0.9", "--top-p", "0.9", "--seed", "42"];
        (int exit1, string first, _) = KvFetchProcess.Run(args);
        (int exit2, string second, _) = KvFetchProcess.Run(args);
        Assert.Equal(0, exit1);
        Assert.Equal(0, exit2);
        Assert.Equal(first.Split('╭')[0], second.Split('╭')[0]);
    }

    [Fact]
    public void Generate_MissingModelDirectory_OneLineErrorAndNonZeroExit()
    {
        string missing = Path.Combine(Path.GetTempPath(), "kvfetch-no-such-model-" + Guid.NewGuid().ToString("N"));
        (int exit, _, string error) = KvFetchProcess.Run("generate", "--model", missing, "--prompt", "x");
        Assert.Equal(1, exit);
        Assert.StartsWith("kvfetch: error: ", error, StringComparison.Ordinal);
        Assert.Contains(missing, error, StringComparison.Ordinal);
        Assert.Single(error.Trim().Split('\n'));
    }

    [Fact]
    public void Generate_CorruptWeights_NamesFileInError()
    {
        string dir = Directory.CreateTempSubdirectory("kvfetch-corrupt-").FullName;
        try
        {
            string bundled = Path.Combine(AppContext.BaseDirectory, "models", "kvf-code-32l");
            foreach (string file in Directory.GetFiles(bundled))
            {
                File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
            }

            // The last weight file, whatever the bundled model's sharding.
            string shard = Directory.GetFiles(dir, "*.safetensors").Order(StringComparer.Ordinal).Last();
            using (FileStream stream = File.Open(shard, FileMode.Open))
            {
                stream.SetLength(stream.Length / 2);
            }

            (int exit, _, string error) = KvFetchProcess.Run("generate", "--model", dir, "--prompt", "x");
            Assert.Equal(1, exit);
            Assert.Contains(Path.GetFileName(shard), error, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Generate_PromptAndFileTogether_Rejected()
    {
        (int exit, _, string error) = KvFetchProcess.Run("generate", "--prompt", "x", "--file", "y.txt");
        Assert.NotEqual(0, exit);
        Assert.Contains("exactly one of --prompt or --file", error, StringComparison.Ordinal);
    }
}
