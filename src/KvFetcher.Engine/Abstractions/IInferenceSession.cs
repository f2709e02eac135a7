namespace KvFetcher.Engine;

/// <summary>
/// One sequence being computed by an engine (<see cref="InferenceSession"/> on the CPU, the CUDA engine's session on a
/// GPU): its KV cache and what a forward step needs. Prefill may run in chunks ([a, b) on top of [0, a)), and positions
/// imported into <see cref="Cache"/> are continued from exactly as if they had been computed. Not thread-safe, except
/// that the cache may be imported into from another thread for positions the engine does not touch meanwhile.
/// </summary>
public interface IInferenceSession : IDisposable
{
    IInferenceModel Model { get; }

    IKvCache Cache { get; }

    /// <summary>Logits per token: the vocabulary size.</summary>
    int VocabSize { get; }

    /// <summary>
    /// Computes <paramref name="tokens"/> at positions [<paramref name="startPosition"/>, + length) on top of a cache
    /// whose positions [0, startPosition) are filled, and writes the last token's logits to <paramref name="lastLogits"/>.
    /// </summary>
    void Prefill(ReadOnlySpan<int> tokens, int startPosition, Span<float> lastLogits);

    /// <summary>Computes one generated token at <paramref name="position"/> and writes the next token's logits.</summary>
    void Decode(int token, int position, Span<float> logits);

    /// <summary>
    /// Computes <paramref name="tokens"/> at positions [<paramref name="startPosition"/>, + length) through the lower
    /// <paramref name="layers"/> layers only (on top of a cache whose positions [0, startPosition) are filled), writing
    /// their KV; no logits. The positions count as filled once their upper layers are imported too
    /// (<see cref="IKvCache.ImportLayers"/>), in either order; the result is then the same as a full prefill's.
    /// Works where <see cref="IKvCache.SupportsLayerRanges"/> says so.
    /// </summary>
    void PrefillLowerLayers(ReadOnlySpan<int> tokens, int startPosition, int layers) =>
        throw new NotSupportedException("This engine does not prefill a layer range.");

    /// <summary>Empties the cache.</summary>
    void Reset();
}
