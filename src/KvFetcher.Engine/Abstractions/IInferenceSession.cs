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

    /// <summary>Empties the cache.</summary>
    void Reset();
}
