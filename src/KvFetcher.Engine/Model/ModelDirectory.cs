using System.Globalization;
using KvFetcher.Engine.Tokenization;

namespace KvFetcher.Engine.Model;

/// <summary>
/// A Hugging Face model directory opened for inference: <c>config.json</c>, the safetensors weights (checked to
/// hold every tensor the configuration needs, with the shapes it implies) and the tokenizer.
/// </summary>
public sealed class LoadedModel : IDisposable
{
    /// <summary>The configuration file name.</summary>
    public const string ConfigFileName = "config.json";

    private LoadedModel(string directory, ModelConfig config, ModelWeights weights, TextTokenizer tokenizer)
    {
        Directory = directory;
        Config = config;
        Weights = weights;
        Tokenizer = tokenizer;
    }

    /// <summary>The model directory (full path).</summary>
    public string Directory { get; }

    public ModelConfig Config { get; }

    public ModelWeights Weights { get; }

    public TextTokenizer Tokenizer { get; }

    /// <summary>Opens and checks the model in <paramref name="directory"/>.</summary>
    /// <exception cref="InvalidModelException">The directory or one of its files is missing or invalid, or a
    /// tensor the configuration needs is missing or has the wrong shape.</exception>
    public static LoadedModel Open(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        string fullPath = Path.GetFullPath(directory);
        if (!System.IO.Directory.Exists(fullPath))
        {
            throw new InvalidModelException(fullPath, "the model directory does not exist.");
        }

        string configPath = Path.Combine(fullPath, ConfigFileName);
        if (!File.Exists(configPath))
        {
            throw new InvalidModelException(configPath, "the model directory has no config.json.");
        }

        ModelConfig config = ModelConfig.Load(configPath);
        TextTokenizer tokenizer = TextTokenizer.Load(fullPath, config);
        ModelWeights weights = ModelWeights.Open(fullPath);
        try
        {
            CheckWeights(config, weights);
        }
        catch
        {
            weights.Dispose();
            throw;
        }

        return new LoadedModel(fullPath, config, weights, tokenizer);
    }

    /// <summary>
    /// The tensors a model with <paramref name="config"/> reads, with their shapes, in checkpoint order:
    /// embeddings, each layer, the final norm and (unless tied) the output head.
    /// </summary>
    public static IEnumerable<(string Name, int[] Shape)> RequiredTensors(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        int hidden = config.HiddenSize;
        int query = config.QueryDim;
        int kv = config.KvDim;
        int intermediate = config.IntermediateSize;

        yield return ("model.embed_tokens.weight", [config.VocabSize, hidden]);
        for (int layer = 0; layer < config.NumLayers; layer++)
        {
            string prefix = string.Create(CultureInfo.InvariantCulture, $"model.layers.{layer}.");
            yield return (prefix + "input_layernorm.weight", [hidden]);
            yield return (prefix + "self_attn.q_proj.weight", [query, hidden]);
            yield return (prefix + "self_attn.k_proj.weight", [kv, hidden]);
            yield return (prefix + "self_attn.v_proj.weight", [kv, hidden]);
            if (config.AttentionBias)
            {
                yield return (prefix + "self_attn.q_proj.bias", [query]);
                yield return (prefix + "self_attn.k_proj.bias", [kv]);
                yield return (prefix + "self_attn.v_proj.bias", [kv]);
            }

            yield return (prefix + "self_attn.o_proj.weight", [hidden, query]);
            if (config.OutputBias)
            {
                yield return (prefix + "self_attn.o_proj.bias", [hidden]);
            }

            yield return (prefix + "post_attention_layernorm.weight", [hidden]);
            yield return (prefix + "mlp.gate_proj.weight", [intermediate, hidden]);
            yield return (prefix + "mlp.up_proj.weight", [intermediate, hidden]);
            yield return (prefix + "mlp.down_proj.weight", [hidden, intermediate]);
            if (config.MlpBias)
            {
                yield return (prefix + "mlp.gate_proj.bias", [intermediate]);
                yield return (prefix + "mlp.up_proj.bias", [intermediate]);
                yield return (prefix + "mlp.down_proj.bias", [hidden]);
            }
        }

        yield return ("model.norm.weight", [hidden]);
        if (!config.TieWordEmbeddings)
        {
            yield return ("lm_head.weight", [config.VocabSize, hidden]);
        }
    }

    public void Dispose() => Weights.Dispose();

    private static void CheckWeights(ModelConfig config, ModelWeights weights)
    {
        string weightsName = weights.Files.Count == 1
            ? weights.Files[0]
            : Path.Combine(weights.Directory, ModelWeights.IndexFileName);
        foreach ((string name, int[] shape) in RequiredTensors(config))
        {
            string? file = weights.FileOf(name);
            if (file is null)
            {
                throw new InvalidModelException(
                    weightsName, $"tensor '{name}' is missing; config.json ({config.Architecture}, {config.NumLayers} layers) needs it.");
            }

            WeightTensor tensor = weights.Get(name);
            if (!tensor.Shape.AsSpan().SequenceEqual(shape))
            {
                throw new InvalidModelException(
                    file,
                    $"tensor '{name}' has shape [{string.Join(", ", tensor.Shape)}], but config.json implies [{string.Join(", ", shape)}].");
            }
        }
    }
}
