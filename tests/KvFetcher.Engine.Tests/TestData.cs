namespace KvFetcher.Engine.Tests;

/// <summary>Where the golden data lives: tests/TestData and the bundled model under models/.</summary>
internal static class TestData
{
    public const string BundledModelName = "kvf-pydoc-16m";

    private static readonly Lazy<string> s_root = new(FindRepositoryRoot);

    public static string RepositoryRoot => s_root.Value;

    public static string BundledModel => Path.Combine(RepositoryRoot, "models", BundledModelName);

    public static string BundledFixture => Path.Combine(RepositoryRoot, "tests", "TestData", "fixtures", BundledModelName);

    public static string Fixture(string name) => Path.Combine(RepositoryRoot, "tests", "TestData", "fixtures", name);

    public static string TinyModel(string name) => Path.Combine(RepositoryRoot, "tests", "TestData", "models", name);

    private static string FindRepositoryRoot()
    {
        // The checkout this assembly was built from (outputs may live outside it, e.g. with --artifacts-path).
        string? built = typeof(TestData).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyMetadataAttribute), false)
            .Cast<System.Reflection.AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "RepositoryRoot")?.Value;
        if (built is not null && File.Exists(Path.Combine(built, "KvFetcher.slnx")))
        {
            return Path.GetFullPath(built);
        }

        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "KvFetcher.slnx")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException($"No KvFetcher.slnx above {AppContext.BaseDirectory}.");
    }
}
