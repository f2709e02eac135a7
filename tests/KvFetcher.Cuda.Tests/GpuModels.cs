using System.Collections.Concurrent;
using KvFetcher.Core;
using KvFetcher.Engine.Tests;

namespace KvFetcher.Cuda.Tests;

/// <summary>
/// Whether this machine has a usable CUDA device, and the models the GPU checks load, opened once per process and
/// setting (each open uploads weights and compiles the kernels). Shared by the xunit tests and the device runner.
/// </summary>
internal static class GpuModels
{
    private static readonly Lazy<(bool Available, string Reason)> s_availability = new(() =>
    {
        bool available = CudaContext.IsAvailable(out string reason);
        return (available, reason);
    });

    private static readonly Lazy<CudaContext> s_context = new(() => CudaContext.Create());
    private static readonly ConcurrentDictionary<(string, CudaMatmulPrecision, DType), CudaLanguageModel> s_models = new();

    /// <summary>The model names of the fixtures: the bundled model and every tiny one under tests/TestData/models.</summary>
    public static IReadOnlyList<string> Names { get; } = TestData.FixtureModelNames;

    public static bool Available => s_availability.Value.Available;

    /// <summary>Why there is no device (empty when there is one).</summary>
    public static string Reason => s_availability.Value.Reason;

    public static CudaContext Context => s_context.Value;

    public static (string Model, string Fixture) Paths(string name) => name == "bundled"
        ? (TestData.BundledModel, TestData.BundledFixture)
        : (TestData.TinyModel(name), TestData.Fixture(name));

    /// <summary>The model <paramref name="name"/> on the device with the given settings (opened on first use, kept).</summary>
    public static CudaLanguageModel Get(string name, CudaMatmulPrecision precision = CudaMatmulPrecision.StoredSplit, DType kvStorage = DType.Float32) =>
        s_models.GetOrAdd((name, precision, kvStorage), key => CudaLanguageModel.Open(
            Paths(key.Item1).Model,
            new CudaModelOptions { Context = Context, MatmulPrecision = key.Item2, KvStorageDType = key.Item3 }));
}
