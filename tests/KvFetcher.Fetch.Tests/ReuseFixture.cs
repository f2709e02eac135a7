using KvFetcher.Core;
using KvFetcher.Engine;
using KvFetcher.Tests;

namespace KvFetcher.Fetch.Tests;

/// <summary>
/// The bundled model (fp16 KV storage, as reuse stores it), a real held-out document's first 1,100 tokens (4 reusable
/// 256-token chunks plus a suffix), and the full prefill's logits and KV: what every reuse path must reproduce.
/// </summary>
public sealed class ReuseFixture : IDisposable
{
    public const int PromptTokens = 1100;

    public ReuseFixture()
    {
        Model = LanguageModel.Open(Path.Combine(Repository.Root, "models", "kvf-code-32l"), new LanguageModelOptions { KvStorageDType = DType.Float16 });
        string document = Directory.GetFiles(Path.Combine(Repository.Root, "data", "heldout"), "*.txt").Order(StringComparer.Ordinal).First();
        Tokens = Model.Tokenizer.Encode(File.ReadAllText(document))[..PromptTokens];
        InferenceSession session = Model.CreateSession(PromptTokens);
        FullLogits = new float[Model.Config.VocabSize];
        session.Prefill(Tokens, 0, FullLogits);
        FullKv = Export(session);
    }

    public LanguageModel Model { get; }

    public int[] Tokens { get; }

    public float[] FullLogits { get; }

    public byte[] FullKv { get; }

    public static byte[] Export(InferenceSession session)
    {
        var kv = new byte[session.Cache.GetExportByteCount(PromptTokens, DType.Float16)];
        session.Cache.Export(0, PromptTokens, DType.Float16, kv);
        return kv;
    }

    public void Dispose() => Model.Dispose();
}
