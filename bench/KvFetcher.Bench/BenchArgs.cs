namespace KvFetcher.Bench;

/// <summary>What the benchmark modes share: their option parsing and where the checkout is.</summary>
internal static class BenchArgs
{
    /// <summary>The value after <paramref name="name"/>, or null.</summary>
    public static string? Option(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    /// <summary>The checkout the benchmark runs from (the folder holding KvFetcher.slnx), else the current folder.</summary>
    public static string RepositoryRoot()
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "KvFetcher.slnx")))
            {
                return dir.FullName;
            }
        }

        return Directory.GetCurrentDirectory();
    }

    /// <summary>The bundled model of the checkout.</summary>
    public static string BundledModel() => Path.Combine(RepositoryRoot(), "models", "kvf-code-32l");
}
