using System.Text.Json.Serialization;

namespace KvFetcher.Bench;

/// <summary>Source-generated JSON for the benchmark results (no reflection).</summary>
[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(Dictionary<string, Dictionary<string, double>>))]
internal sealed partial class BenchJson : JsonSerializerContext;
