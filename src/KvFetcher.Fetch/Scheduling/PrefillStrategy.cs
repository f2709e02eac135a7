namespace KvFetcher.Fetch.Scheduling;

/// <summary>How a request's stored prefix is obtained.</summary>
public enum PrefillMode
{
    /// <summary>Compute everything (full prefill); the floor.</summary>
    ComputeOnly,

    /// <summary>Fetch every stored chunk as one variant, then compute the rest.</summary>
    FetchOnly,

    /// <summary>Cake: compute from the front while fetching one variant from the back; meet at run time.</summary>
    Cake,

    /// <summary>
    /// Ours: Cake with the meeting point predicted from measured rates, a variant chosen per chunk from the ladder,
    /// and the engine computing a chunk itself instead of waiting when that is predicted faster.
    /// </summary>
    Adaptive,

    /// <summary>
    /// Ours with layer-wise overlap: ours' plan, or, where the measured rates predict it faster, a meeting point that is a
    /// chunk and a layer split of it (the engine computes its lower layers while the fetcher brings its upper ones, from a
    /// lossless layer-addressable variant).
    /// </summary>
    LayerSplit,
}

/// <summary>A prefill strategy: the mode, the variant for fixed-variant modes, and whether fetching is pipelined.</summary>
public sealed record PrefillStrategy(PrefillMode Mode, KvVariant? Variant = null, bool Pipelined = true)
{
    public static PrefillStrategy ComputeOnly { get; } = new(PrefillMode.ComputeOnly);

    public static PrefillStrategy Adaptive { get; } = new(PrefillMode.Adaptive);

    public static PrefillStrategy LayerSplit { get; } = new(PrefillMode.LayerSplit);

    public static PrefillStrategy FetchOnly(KvVariant variant, bool pipelined = true) => new(PrefillMode.FetchOnly, variant, pipelined);

    public static PrefillStrategy Cake(KvVariant variant) => new(PrefillMode.Cake, variant);

    /// <summary>Parses <c>compute</c>, <c>ours</c>, <c>ours-layer</c>, <c>cake-raw</c>, <c>fetch-video8</c>, <c>fetch-raw-seq</c>.</summary>
    public static PrefillStrategy Parse(string text)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(text);
        if (text is "compute" or "compute-only")
        {
            return ComputeOnly;
        }

        if (text is "ours" or "adaptive")
        {
            return Adaptive;
        }

        if (text is "ours-layer")
        {
            return LayerSplit;
        }

        if (text.StartsWith("cake-", StringComparison.Ordinal))
        {
            return Cake(KvVariant.Parse(text[5..]));
        }

        if (text.StartsWith("fetch-", StringComparison.Ordinal))
        {
            bool sequential = text.EndsWith("-seq", StringComparison.Ordinal);
            string variant = sequential ? text[6..^4] : text[6..];
            return FetchOnly(KvVariant.Parse(variant), !sequential);
        }

        throw new ArgumentException($"Unknown strategy '{text}': compute, ours, ours-layer, cake-VARIANT, fetch-VARIANT or fetch-VARIANT-seq (VARIANT: raw, exact, cachegen0, video8, ...).", nameof(text));
    }

    public override string ToString() => Mode switch
    {
        PrefillMode.ComputeOnly => "compute",
        PrefillMode.Adaptive => "ours",
        PrefillMode.LayerSplit => "ours-layer",
        PrefillMode.Cake => $"cake-{Variant}",
        _ => Pipelined ? $"fetch-{Variant}" : $"fetch-{Variant}-seq",
    };
}
