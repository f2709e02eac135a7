using KvFetcher.Engine.Cpu;

namespace KvFetcher.Engine;

/// <summary>
/// One sequence being computed on the CPU: its <see cref="KvCache"/> and the activations of a forward step. Prefill may
/// run in chunks ([a, b) on top of [0, a)), and positions may also be imported into the cache in any order, after
/// which prefill and decode continue exactly as if those positions had been computed. Not thread-safe.
/// </summary>
public sealed class InferenceSession : InferenceSessionBase<LanguageModel, KvCache>
{
    private readonly CpuTransformer _transformer;
    private readonly ForwardScratch _scratch;

    internal InferenceSession(LanguageModel model, int capacity)
        : base(model, model.CreateCache(capacity))
    {
        _transformer = model.Transformer;
        _scratch = new ForwardScratch(model.Config, Math.Min(model.Options.MaxStepTokens, capacity));
    }

    /// <summary>The most tokens one internal forward step computes.</summary>
    public override int StepTokens => _scratch.MaxTokens;

    /// <summary>A measurement hook that sees every layer's queries and keys before and after RoPE (null: none).</summary>
    public IAttentionProbe? Probe { get; set; }

    protected override int Forward(ReadOnlySpan<int> tokens, int startPosition, Span<float> logits, bool allLogits)
    {
        _transformer.Forward(tokens, startPosition, Cache, _scratch, logits, allLogits, Probe);
        return -1;
    }

    protected override void ForwardLowerLayers(ReadOnlySpan<int> tokens, int startPosition, int layers) =>
        _transformer.Forward(tokens, startPosition, Cache, _scratch, [], allLogits: false, layers, Probe);
}
