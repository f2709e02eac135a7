namespace KvFetcher.Engine.Tests;

/// <summary>Where the golden data lives: tests/TestData and the bundled model under models/.</summary>
internal static class TestData
{
    public const string BundledModelName = "kvf-code-32l";

    public static string RepositoryRoot => KvFetcher.Tests.Repository.Root;

    public static string BundledModel => Path.Combine(RepositoryRoot, "models", BundledModelName);

    public static string BundledFixture => Fixture(BundledModelName);

    public static string Fixture(string name) => Path.Combine(RepositoryRoot, "tests", "TestData", "fixtures", name);

    /// <summary>"bundled" and the names of the tiny models under tests/TestData/models that have a fixture, sorted.</summary>
    public static IReadOnlyList<string> FixtureModelNames =>
    [
        "bundled",
        .. Directory.GetDirectories(Path.Combine(RepositoryRoot, "tests", "TestData", "models"))
            .Select(d => Path.GetFileName(d))
            .Where(n => File.Exists(Path.Combine(Fixture(n), "fixture.json")))
            .Order(StringComparer.Ordinal),
    ];

    public static string TinyModel(string name) => Path.Combine(RepositoryRoot, "tests", "TestData", "models", name);

    /// <summary>Hugging Face tokenizers' ids for a long text (see make_long_text_reference.mjs beside it).</summary>
    public static string LongTextReference => Path.Combine(RepositoryRoot, "tests", "TestData", "tokenizer", $"long-text-{BundledModelName}.json.gz");
}
