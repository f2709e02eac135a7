namespace KvFetcher.Engine.Cpu;

/// <summary>
/// Sees each layer's queries and keys as a CPU forward step computes them, before and after RoPE: a measurement hook
/// (<c>kvfetch-bench kv-stats</c> reads pre-RoPE keys and attention patterns through it), not part of inference. Set on
/// <see cref="InferenceSession.Probe"/>; it runs on the session's thread and must not keep the spans.
/// </summary>
public interface IAttentionProbe
{
    /// <summary>
    /// Layer <paramref name="layer"/>'s <paramref name="queries"/> ([count, heads * headDim]) and <paramref name="keys"/>
    /// ([count, kvHeads * headDim]) of positions [<paramref name="start"/>, start + count), before RoPE
    /// (<paramref name="rotated"/> false) and after it (true).
    /// </summary>
    void Observe(int layer, int start, int count, ReadOnlySpan<float> queries, ReadOnlySpan<float> keys, bool rotated);
}
