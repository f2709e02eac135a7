namespace KvFetcher.Engine.Model;

/// <summary>Configurations of well-known model shapes, for timing with generated weights when the checkpoint is not at hand.</summary>
public static class ModelShapes
{
    /// <summary>Llama-3-8B's architecture (32 layers, 4096 hidden, 32 query and 8 KV heads of 128, 128K vocabulary).</summary>
    public static ModelConfig Llama3Size8B(int maxPositions = 32_768) => new()
    {
        Architecture = ModelArchitecture.Llama,
        VocabSize = 128_256,
        HiddenSize = 4096,
        IntermediateSize = 14_336,
        NumLayers = 32,
        NumHeads = 32,
        NumKvHeads = 8,
        HeadDim = 128,
        MaxPositionEmbeddings = maxPositions,
        RmsNormEps = 1e-5f,
        Rope = new RopeConfig { Theta = 500_000 },
    };
}
