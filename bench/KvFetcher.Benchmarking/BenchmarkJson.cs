using System.Text.Json.Serialization;

namespace KvFetcher.Benchmarking;

/// <summary>The benchmarks' JSON (source-generated, so NativeAOT builds write and read it too).</summary>
[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(TtftSweepResult))]
[JsonSerializable(typeof(IReadOnlyList<MixedWorkloadRow>))]
[JsonSerializable(typeof(ServingWorkloadResult))]
public sealed partial class BenchmarkJson : JsonSerializerContext;
