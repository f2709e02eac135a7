namespace KvFetcher.Engine;

/// <summary>
/// What every engine's session shares, written once: the argument checks of a forward step, splitting a prefill into
/// steps of at most <see cref="StepTokens"/> tokens, and asking for logits only where they are read (the last step of a
/// prefill, every step of <see cref="PrefillAllLogits"/>). An engine backend derives from it and runs one
/// <see cref="Forward"/> step: <see cref="InferenceSession"/> on the CPU, the CUDA engine's session on a GPU.
/// Not thread-safe.
/// </summary>
/// <typeparam name="TModel">The engine's model.</typeparam>
/// <typeparam name="TCache">The engine's KV cache.</typeparam>
public abstract class InferenceSessionBase<TModel, TCache> : IInferenceSession
    where TModel : class, IInferenceModel
    where TCache : KvCacheBase
{
    /// <summary>A session of <paramref name="model"/> over <paramref name="cache"/>, which it then owns.</summary>
    protected InferenceSessionBase(TModel model, TCache cache)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(cache);
        Model = model;
        Cache = cache;
    }

    public TModel Model { get; }

    public TCache Cache { get; }

    IInferenceModel IInferenceSession.Model => Model;

    IKvCache IInferenceSession.Cache => Cache;

    /// <summary>Logits per token: the vocabulary size.</summary>
    public int VocabSize => Model.Config.VocabSize;

    /// <summary>The most tokens one internal forward step computes.</summary>
    public abstract int StepTokens { get; }

    /// <summary>
    /// Computes <paramref name="tokens"/> at positions [<paramref name="startPosition"/>, + length) on top of a cache
    /// whose positions [0, startPosition) are filled, and writes the last token's logits to
    /// <paramref name="lastLogits"/> (at least <see cref="VocabSize"/> long). Steps before the last only fill the
    /// cache: the LM head runs once.
    /// </summary>
    public void Prefill(ReadOnlySpan<int> tokens, int startPosition, Span<float> lastLogits)
    {
        CheckStep(tokens, startPosition, lastLogits.Length, VocabSize);
        int step = StepTokens;
        for (int offset = 0; offset < tokens.Length; offset += step)
        {
            int n = Math.Min(step, tokens.Length - offset);
            bool last = offset + n == tokens.Length;
            _ = Forward(tokens.Slice(offset, n), startPosition + offset, last ? lastLogits : [], allLogits: false);
        }
    }

    /// <summary>Prefill continuing at the cache's <see cref="IKvCache.Length"/>.</summary>
    public void Prefill(ReadOnlySpan<int> tokens, Span<float> lastLogits) => Prefill(tokens, Cache.Length, lastLogits);

    /// <summary>
    /// Like <see cref="Prefill(ReadOnlySpan{int}, int, Span{float})"/> but writes the logits of every token,
    /// [tokens.Length, VocabSize], for scoring and perplexity.
    /// </summary>
    public void PrefillAllLogits(ReadOnlySpan<int> tokens, int startPosition, Span<float> logits)
    {
        CheckStep(tokens, startPosition, logits.Length, (long)tokens.Length * VocabSize);
        int step = StepTokens;
        for (int offset = 0; offset < tokens.Length; offset += step)
        {
            int n = Math.Min(step, tokens.Length - offset);
            _ = Forward(tokens.Slice(offset, n), startPosition + offset, logits.Slice(offset * VocabSize, n * VocabSize), allLogits: true);
        }
    }

    /// <summary>Computes one generated token at <paramref name="position"/> and writes the next token's logits.</summary>
    public void Decode(int token, int position, Span<float> logits) => Prefill([token], position, logits);

    /// <summary>
    /// Computes <paramref name="tokens"/> at [<paramref name="startPosition"/>, + length) through the lower
    /// <paramref name="layers"/> layers only (1 to the model's layers - 1), writing their KV and no logits; the positions
    /// are filled once their upper layers are imported (<see cref="KvCacheBase.ImportLayers"/>).
    /// </summary>
    public void PrefillLowerLayers(ReadOnlySpan<int> tokens, int startPosition, int layers)
    {
        if (!Cache.SupportsLayerRanges)
        {
            throw new NotSupportedException("This engine does not prefill a layer range.");
        }

        CheckStep(tokens, startPosition, 0, 0);
        ArgumentOutOfRangeException.ThrowIfLessThan(layers, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layers, Cache.NumLayers);
        int step = StepTokens;
        for (int offset = 0; offset < tokens.Length; offset += step)
        {
            int n = Math.Min(step, tokens.Length - offset);
            ForwardLowerLayers(tokens.Slice(offset, n), startPosition + offset, layers);
        }
    }

    /// <summary>One checked step of <see cref="PrefillLowerLayers"/>; engines that support layer ranges override it.</summary>
    protected virtual void ForwardLowerLayers(ReadOnlySpan<int> tokens, int startPosition, int layers) =>
        throw new NotSupportedException("This engine does not prefill a layer range.");

    /// <summary>Empties the cache.</summary>
    public void Reset() => Cache.Truncate(0);

    public void Dispose()
    {
        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases what the engine holds for the session (its cache included).</summary>
    protected virtual void Dispose(bool disposing)
    {
    }

    /// <summary>
    /// One forward step of at most <see cref="StepTokens"/> checked tokens at [<paramref name="startPosition"/>, + n):
    /// fills the cache and, unless <paramref name="logits"/> is empty, writes the last token's logits (or every
    /// token's with <paramref name="allLogits"/>). Returns the greedy next token where the engine computes it, else -1.
    /// </summary>
    protected abstract int Forward(ReadOnlySpan<int> tokens, int startPosition, Span<float> logits, bool allLogits);

    /// <summary>
    /// Throws unless <paramref name="tokens"/> is non-empty, positions [0, <paramref name="startPosition"/>) of the
    /// cache are filled, the step fits the cache, and the logits buffer holds what the step writes.
    /// </summary>
    protected void CheckStep(ReadOnlySpan<int> tokens, int startPosition, long logitsLength, long logitsNeeded)
    {
        if (tokens.IsEmpty)
        {
            throw new ArgumentException("At least one token is needed.", nameof(tokens));
        }

        ArgumentOutOfRangeException.ThrowIfNegative(startPosition);
        if (Cache.Length < startPosition)
        {
            throw new InvalidOperationException($"Prefill at position {startPosition} needs positions [0, {startPosition}) in the KV cache; only [0, {Cache.Length}) are filled.");
        }

        if (startPosition + tokens.Length > Cache.Capacity)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens.Length, $"Positions [{startPosition}, {startPosition + tokens.Length}) exceed the KV cache capacity of {Cache.Capacity} tokens.");
        }

        if (logitsLength < logitsNeeded)
        {
            throw new ArgumentException($"The logits buffer holds {logitsLength} values; {logitsNeeded} are needed.", nameof(logitsLength));
        }
    }
}
