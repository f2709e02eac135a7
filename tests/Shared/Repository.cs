using System.Reflection;

namespace KvFetcher.Tests;

/// <summary>
/// The checkout the tests were built from (compiled into each test project that links this file): the build records
/// it as assembly metadata, since outputs may live outside it (--artifacts-path); else the first folder above the
/// test assembly that holds KvFetcher.slnx.
/// </summary>
internal static class Repository
{
    private static readonly Lazy<string> s_root = new(Find);

    public static string Root => s_root.Value;

    private static string Find()
    {
        string? built = typeof(Repository).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
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
