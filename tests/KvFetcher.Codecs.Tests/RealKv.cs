using System.Text.Json;
using KvFetcher.Core;
using KvFetcher.Engine;

namespace KvFetcher.Codecs.Tests;

/// <summary>
/// Real KV for codec tests: the bundled model's cache over held-out documentation text (the reference fixture's
/// longest prompt), computed once per test run and exported in the documented layout.
/// </summary>
internal static class RealKv
{
    private static readonly Lazy<(float[] Values, int Tokens, LanguageModel Model, int[] Ids)> s_data = new(Compute);

    public static string RepositoryRoot => KvFetcher.Tests.Repository.Root;

    public static string BundledModel => Path.Combine(RepositoryRoot, "models", "kvf-code-32l");

    /// <summary>The bundled model (shared; do not dispose).</summary>
    public static LanguageModel Model => s_data.Value.Model;

    /// <summary>The token ids the KV was computed from.</summary>
    public static int[] TokenIds => s_data.Value.Ids;

    /// <summary>The KV of tokens [start, start + tokens) as <paramref name="dtype"/> bytes, and its shape.</summary>
    public static (byte[] Bytes, KvShape Shape) Chunk(int start, int tokens, DType dtype)
    {
        (float[] values, int total, LanguageModel model, _) = s_data.Value;
        ArgumentOutOfRangeException.ThrowIfGreaterThan(start + tokens, total);
        var cache = model.CreateCache(total);
        var shape = new KvShape(model.Config.NumLayers, total, model.Config.NumKvHeads, model.Config.HeadDim);
        var all = new byte[shape.Elements * 4];
        Buffer.BlockCopy(values, 0, all, 0, all.Length);
        cache.Import(0, total, DType.Float32, all);
        var bytes = new byte[cache.GetExportByteCount(tokens, dtype)];
        cache.Export(start, start + tokens, dtype, bytes);
        return (bytes, shape with { Tokens = tokens });
    }

    private static (float[], int, LanguageModel, int[]) Compute()
    {
        LanguageModel model = LanguageModel.Open(BundledModel);
        using JsonDocument json = JsonDocument.Parse(File.ReadAllText(Path.Combine(RepositoryRoot, "tests", "TestData", "fixtures", "kvf-code-32l", "fixture.json")));
        int[] ids = json.RootElement.GetProperty("prompts").EnumerateArray()
            .Select(p => p.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray())
            .OrderByDescending(a => a.Length).First();
        ids = ids[..Math.Min(ids.Length, 1024)];
        InferenceSession session = model.CreateSession(ids.Length);
        session.Prefill(ids, 0, new float[model.Config.VocabSize]);
        var bytes = new byte[session.Cache.GetExportByteCount(ids.Length, DType.Float32)];
        session.Cache.Export(0, ids.Length, DType.Float32, bytes);
        var values = new float[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, values, 0, bytes.Length);
        return (values, ids.Length, model, ids);
    }
}
