using KvFetcher.Engine.Model;

namespace KvFetcher.Engine.Cpu;

/// <summary>The activations of one forward step of up to <see cref="MaxTokens"/> tokens, allocated once per session.</summary>
internal sealed class ForwardScratch
{
    public ForwardScratch(ModelConfig config, int maxTokens)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTokens, 1);
        MaxTokens = maxTokens;
        int qWidth = config.NumHeads * config.HeadDim;
        int kvWidth = config.NumKvHeads * config.HeadDim;
        Hidden = new float[maxTokens * config.HiddenSize];
        Normed = new float[maxTokens * config.HiddenSize];
        Projected = new float[maxTokens * config.HiddenSize];
        Query = new float[maxTokens * qWidth];
        AttentionOutput = new float[maxTokens * qWidth];
        Key = new float[maxTokens * kvWidth];
        Value = new float[maxTokens * kvWidth];
        Gate = new float[maxTokens * config.IntermediateSize];
        Up = new float[maxTokens * config.IntermediateSize];
        Attention = new Attention(config.NumHeads, config.NumKvHeads, config.HeadDim);
    }

    public int MaxTokens { get; }

    public float[] Hidden { get; }

    public float[] Normed { get; }

    public float[] Projected { get; }

    public float[] Query { get; }

    public float[] AttentionOutput { get; }

    public float[] Key { get; }

    public float[] Value { get; }

    public float[] Gate { get; }

    public float[] Up { get; }

    public Attention Attention { get; }
}
