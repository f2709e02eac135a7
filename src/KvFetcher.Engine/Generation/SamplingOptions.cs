namespace KvFetcher.Engine.Generation;

/// <summary>How the next token is chosen and when generation stops.</summary>
public sealed record SamplingOptions
{
    /// <summary>0 means greedy (argmax); otherwise logits are divided by it before softmax.</summary>
    public float Temperature { get; init; }

    /// <summary>Nucleus sampling: keep the smallest set of top tokens whose probability reaches this (1 keeps all).</summary>
    public float TopP { get; init; } = 1f;

    /// <summary>Seed of the sampler's random generator, for reproducible sampling.</summary>
    public int? Seed { get; init; }

    /// <summary>The most tokens to generate.</summary>
    public int MaxTokens { get; init; } = 128;

    /// <summary>Stop after an end-of-sequence token (which is still reported).</summary>
    public bool StopAtEos { get; init; } = true;

    internal void Validate()
    {
        if (!(Temperature >= 0) || float.IsInfinity(Temperature))
        {
            throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "Temperature must be a finite value >= 0.");
        }

        if (!(TopP > 0 && TopP <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "TopP must be in (0, 1].");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(MaxTokens);
    }
}
