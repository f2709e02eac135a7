namespace KvFetcher.Core;

/// <summary>
/// The shape of one chunk of KV in the documented layout <c>[layer][kind: 0 = K, 1 = V][token][kvHead][headDim]</c>
/// (the layout of <c>KvCache.Export</c>).
/// </summary>
public readonly record struct KvShape(int Layers, int Tokens, int KvHeads, int HeadDim)
{
    /// <summary>K (or V) channels per token per layer: kvHeads * headDim.</summary>
    public int Channels => KvHeads * HeadDim;

    /// <summary>Elements in the whole chunk: layers * 2 * tokens * channels.</summary>
    public long Elements => (long)Layers * 2 * Tokens * Channels;

    /// <summary>Throws unless every dimension is positive.</summary>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(Layers, 1, nameof(Layers));
        ArgumentOutOfRangeException.ThrowIfLessThan(Tokens, 1, nameof(Tokens));
        ArgumentOutOfRangeException.ThrowIfLessThan(KvHeads, 1, nameof(KvHeads));
        ArgumentOutOfRangeException.ThrowIfLessThan(HeadDim, 1, nameof(HeadDim));
    }

    public override string ToString() => $"[{Layers} layers x K/V x {Tokens} tokens x {KvHeads} heads x {HeadDim}]";
}
