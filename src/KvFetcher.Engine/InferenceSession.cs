using KvFetcher.Engine.Cpu;

namespace KvFetcher.Engine;

/// <summary>
/// One sequence being computed: its <see cref="KvCache"/> and the activations of a forward step. Prefill may run in
/// chunks ([a, b) on top of [0, a)), and positions may also be imported into <see cref="Cache"/> in any order, after
/// which prefill and decode continue exactly as if those positions had been computed. Not thread-safe.
/// </summary>
public sealed class InferenceSession : IInferenceSession
{
    private readonly CpuTransformer _transformer;
    private readonly ForwardScratch _scratch;

    internal InferenceSession(LanguageModel model, int capacity)
    {
        Model = model;
        _transformer = model.Transformer;
        Cache = model.CreateCache(capacity);
        _scratch = new ForwardScratch(model.Config, Math.Min(model.Options.MaxStepTokens, capacity));
    }

    public LanguageModel Model { get; }

    public KvCache Cache { get; }

    IInferenceModel IInferenceSession.Model => Model;

    IKvCache IInferenceSession.Cache => Cache;

    /// <summary>Logits per token: the vocabulary size.</summary>
    public int VocabSize => Model.Config.VocabSize;

    /// <summary>The most tokens one internal forward step computes.</summary>
    public int StepTokens => _scratch.MaxTokens;

    /// <summary>
    /// Computes <paramref name="tokens"/> at positions [<paramref name="startPosition"/>, + length) on top of a cache
    /// whose positions [0, startPosition) are filled, and writes the last token's logits to
    /// <paramref name="lastLogits"/> (at least <see cref="VocabSize"/> long).
    /// </summary>
    public void Prefill(ReadOnlySpan<int> tokens, int startPosition, Span<float> lastLogits)
    {
        CheckStep(tokens, startPosition, lastLogits.Length, VocabSize);
        for (int offset = 0; offset < tokens.Length; offset += StepTokens)
        {
            int n = Math.Min(StepTokens, tokens.Length - offset);
            _transformer.Forward(tokens.Slice(offset, n), startPosition + offset, Cache, _scratch, lastLogits, allLogits: false);
        }
    }

    /// <summary>Prefill continuing at <see cref="KvCache.Length"/>.</summary>
    public void Prefill(ReadOnlySpan<int> tokens, Span<float> lastLogits) => Prefill(tokens, Cache.Length, lastLogits);

    /// <summary>
    /// Like <see cref="Prefill(ReadOnlySpan{int}, int, Span{float})"/> but writes the logits of every token,
    /// [tokens.Length, VocabSize], for scoring and perplexity.
    /// </summary>
    public void PrefillAllLogits(ReadOnlySpan<int> tokens, int startPosition, Span<float> logits)
    {
        CheckStep(tokens, startPosition, logits.Length, (long)tokens.Length * VocabSize);
        for (int offset = 0; offset < tokens.Length; offset += StepTokens)
        {
            int n = Math.Min(StepTokens, tokens.Length - offset);
            _transformer.Forward(tokens.Slice(offset, n), startPosition + offset, Cache, _scratch, logits.Slice(offset * VocabSize, n * VocabSize), allLogits: true);
        }
    }

    /// <summary>Computes one generated token at <paramref name="position"/> and writes the next token's logits.</summary>
    public void Decode(int token, int position, Span<float> logits) => Prefill([token], position, logits);

    /// <summary>Empties the cache.</summary>
    public void Reset() => Cache.Truncate(0);

    /// <summary>Nothing to release: the cache lives in managed memory.</summary>
    public void Dispose()
    {
    }

    private void CheckStep(ReadOnlySpan<int> tokens, int startPosition, int logitsLength, long logitsNeeded) =>
        SessionChecks.Step(Cache, tokens, startPosition, logitsLength, logitsNeeded);
}
