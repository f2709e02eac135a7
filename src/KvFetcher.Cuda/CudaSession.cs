using KvFetcher.Cuda.Gpu;
using KvFetcher.Engine;

namespace KvFetcher.Cuda;

/// <summary>
/// One sequence computed on the device: its <see cref="CudaKvCache"/> and the device activations of a forward step.
/// The same API and rules as <see cref="Engine.InferenceSession"/> (both derive from
/// <see cref="InferenceSessionBase{TModel, TCache}"/>): prefill may run in chunks, positions may be imported into the
/// cache in any order, and prefill and decode then continue as if they had been computed; a chunk may be split by layers
/// (its lower layers computed with <see cref="InferenceSessionBase{TModel, TCache}.PrefillLowerLayers"/>, its upper
/// layers imported with <see cref="CudaKvCache.ImportLayers(int, int, int, Core.DType, ReadOnlySpan{byte})"/>). Every call returns when its
/// work on the device is done. Not thread-safe.
/// </summary>
public sealed class CudaSession : InferenceSessionBase<CudaLanguageModel, CudaKvCache>
{
    /// <summary>The most bytes of logits a step copies back at once.</summary>
    private const long LogitBytesPerCopy = 64L << 20;

    private readonly CudaTransformer _transformer;
    private readonly DeviceScratch _scratch;

    internal CudaSession(CudaLanguageModel model, int capacity)
        : base(model, model.CreateCache(capacity))
    {
        _transformer = model.Transformer;
        try
        {
            int stepTokens = Math.Min(model.Options.MaxStepTokens, capacity);
            int logitRows = (int)Math.Clamp(LogitBytesPerCopy / ((long)model.Config.VocabSize * sizeof(float)), 1, stepTokens);
            _scratch = new DeviceScratch(model.Context, model.Config, _transformer.MatmulType, _transformer.Precision, _transformer.SplitLayerActivations, stepTokens, logitRows);
        }
        catch
        {
            Cache.Dispose();
            throw;
        }
    }

    /// <summary>The most tokens one internal forward step computes.</summary>
    public override int StepTokens => _scratch.MaxTokens;

    /// <summary>
    /// Like <see cref="InferenceSessionBase{TModel, TCache}.Prefill(ReadOnlySpan{int}, int, Span{float})"/>, but
    /// returns the greedy next token (the argmax of the last token's logits, computed on the device) instead of copying
    /// the logits back.
    /// </summary>
    public int PrefillGreedy(ReadOnlySpan<int> tokens, int startPosition)
    {
        CheckStep(tokens, startPosition, 0, 0);
        int chosen = -1;
        for (int offset = 0; offset < tokens.Length; offset += StepTokens)
        {
            int n = Math.Min(StepTokens, tokens.Length - offset);
            chosen = Forward(tokens.Slice(offset, n), startPosition + offset, [], allLogits: false);
        }

        return chosen;
    }

    /// <summary>Computes one generated token at <paramref name="position"/> and returns the greedy next token.</summary>
    public int DecodeGreedy(int token, int position) => PrefillGreedy([token], position);

    protected override int Forward(ReadOnlySpan<int> tokens, int startPosition, Span<float> logits, bool allLogits) =>
        _transformer.Forward(tokens, startPosition, Cache, _scratch, logits, allLogits);

    protected override void ForwardLowerLayers(ReadOnlySpan<int> tokens, int startPosition, int layers) =>
        _transformer.ForwardLowerLayers(tokens, startPosition, Cache, _scratch, layers);

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _scratch.Dispose();
            Cache.Dispose();
        }

        base.Dispose(disposing);
    }
}
