using KvFetcher.Cuda.Gpu;
using KvFetcher.Engine;

namespace KvFetcher.Cuda;

/// <summary>
/// One sequence computed on the device: its <see cref="CudaKvCache"/> and the device activations of a forward step.
/// The same API and rules as <see cref="Engine.InferenceSession"/>: prefill may run in chunks, positions may be
/// imported into <see cref="Cache"/> in any order, and prefill and decode then continue as if they had been computed.
/// Every call returns when its work on the device is done. Not thread-safe.
/// </summary>
public sealed class CudaSession : IInferenceSession
{
    /// <summary>The most bytes of logits a step copies back at once.</summary>
    private const long LogitBytesPerCopy = 64L << 20;

    private readonly CudaTransformer _transformer;
    private readonly DeviceScratch _scratch;

    internal CudaSession(CudaLanguageModel model, int capacity)
    {
        Model = model;
        _transformer = model.Transformer;
        Cache = model.CreateCache(capacity);
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

    public CudaLanguageModel Model { get; }

    public CudaKvCache Cache { get; }

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
            bool last = offset + n == tokens.Length;

            // Intermediate steps only fill the cache; their last-token logits are computed but not needed.
            _transformer.Forward(tokens.Slice(offset, n), startPosition + offset, Cache, _scratch, last ? lastLogits : [], allLogits: false);
        }
    }

    /// <summary>Prefill continuing at <see cref="CudaKvCache.Length"/>.</summary>
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

    /// <summary>
    /// Like <see cref="Prefill(ReadOnlySpan{int}, int, Span{float})"/>, but returns the greedy next token (the
    /// argmax of the last token's logits, computed on the device) instead of copying the logits back.
    /// </summary>
    public int PrefillGreedy(ReadOnlySpan<int> tokens, int startPosition)
    {
        CheckStep(tokens, startPosition, 0, 0);
        int chosen = -1;
        for (int offset = 0; offset < tokens.Length; offset += StepTokens)
        {
            int n = Math.Min(StepTokens, tokens.Length - offset);
            chosen = _transformer.Forward(tokens.Slice(offset, n), startPosition + offset, Cache, _scratch, [], allLogits: false);
        }

        return chosen;
    }

    /// <summary>Computes one generated token at <paramref name="position"/> and writes the next token's logits.</summary>
    public void Decode(int token, int position, Span<float> logits) => Prefill([token], position, logits);

    /// <summary>Computes one generated token at <paramref name="position"/> and returns the greedy next token.</summary>
    public int DecodeGreedy(int token, int position) => PrefillGreedy([token], position);

    /// <summary>Empties the cache.</summary>
    public void Reset() => Cache.Truncate(0);

    public void Dispose()
    {
        _scratch.Dispose();
        Cache.Dispose();
    }

    private void CheckStep(ReadOnlySpan<int> tokens, int startPosition, int logitsLength, long logitsNeeded) =>
        SessionChecks.Step(Cache, tokens, startPosition, logitsLength, logitsNeeded);
}
