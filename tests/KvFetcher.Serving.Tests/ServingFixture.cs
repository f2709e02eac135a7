using KvFetcher.Core;
using KvFetcher.Engine;
using KvFetcher.Engine.Generation;
using KvFetcher.Serving.Chat;
using KvFetcher.Tests;

namespace KvFetcher.Serving.Tests;

/// <summary>
/// What every serving test compares against: the bundled model (fp16 KV storage, as the servers run it) computing a
/// prompt with a plain full prefill and greedy decoding through <see cref="TextGenerator"/>, and a real held-out
/// document long enough for four stored 256-token chunks.
/// </summary>
public sealed class ServingFixture : IDisposable
{
    public ServingFixture()
    {
        ModelDirectory = Path.Combine(Repository.Root, "models", "kvf-code-32l");
        Model = LanguageModel.Open(ModelDirectory, new LanguageModelOptions { KvStorageDType = DType.Float16 });
        string path = Directory.GetFiles(Path.Combine(Repository.Root, "data", "heldout"), "*.txt").Order(StringComparer.Ordinal).First();
        // About 880 tokens of documentation: three full chunks and a suffix.
        Document = File.ReadAllText(path)[..3000];
    }

    public string ModelDirectory { get; }

    public LanguageModel Model { get; }

    public string Document { get; }

    public const string ModelId = "kvf-code-32l";

    /// <summary>The prompt tokens the servers compute for a conversation (the bundled model has the plain template).</summary>
    public int[] ChatTokens(params ChatTurn[] turns) => Model.Tokenizer.Encode(ChatTemplate.Plain.Render(turns), ChatTemplate.Plain.AddSpecialTokens);

    /// <summary>The document as a system message and a question: the shape of a document-QA request.</summary>
    public ChatTurn[] Question(string question) => [new("system", Document), new("user", question)];

    /// <summary>
    /// The greedy continuation of <paramref name="prompt"/> by a full prefill, as text (end of sequence left out), cut
    /// before the first of <paramref name="stops"/> (chat requests stop at the template's <c>"\n\nUser:"</c>).
    /// </summary>
    public string Greedy(int[] prompt, int maxTokens, params string[] stops)
    {
        var generator = new TextGenerator(Model.CreateSession(prompt.Length + maxTokens), new SamplingOptions { MaxTokens = maxTokens });
        int[] ids = [.. generator.Generate(prompt)];
        string text = Model.Tokenizer.Decode(ids, skipSpecial: true);
        foreach (string stop in stops)
        {
            int at = text.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0)
            {
                text = text[..at];
            }
        }

        return text;
    }

    /// <summary>The greedy answer a chat request gets without reuse.</summary>
    public string GreedyChat(ChatTurn[] turns, int maxTokens) => Greedy(ChatTokens(turns), maxTokens, [.. ChatTemplate.Plain.StopSequences]);

    public KvFetcherOptions EngineOptions(string? store, string? token = null) => new()
    {
        ModelDirectory = ModelDirectory,
        Store = store,
        StoreToken = token,
        Reuse = store is not null,
        Engine = KvFetcher.Runtime.EngineKind.Cpu, // answers are compared with the CPU engine's
        // The waiting queue fetches every stored chunk, so tests of what is reused (tenants, lineage, two instances) can
        // count it exactly; ours and Cake split the prefix with the engine by measured rates (see BatchedReuseTests).
        ReuseStrategy = "fetch",
    };

    public void Dispose() => Model.Dispose();
}
