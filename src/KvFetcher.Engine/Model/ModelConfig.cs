using System.Text.Json;
using KvFetcher.Core;

namespace KvFetcher.Engine.Model;

/// <summary>
/// The architecture hyper-parameters of a Hugging Face <c>config.json</c> for the Llama family (Llama, Mistral,
/// Qwen2), with transformers' defaults applied and the values validated.
/// </summary>
public sealed record ModelConfig
{
    private static readonly (string ClassName, string ModelType, ModelArchitecture Architecture)[] s_architectures =
    [
        ("LlamaForCausalLM", "llama", ModelArchitecture.Llama),
        ("MistralForCausalLM", "mistral", ModelArchitecture.Mistral),
        ("Qwen2ForCausalLM", "qwen2", ModelArchitecture.Qwen2),
    ];

    public ModelArchitecture Architecture { get; init; }

    public int VocabSize { get; init; }

    public int HiddenSize { get; init; }

    public int IntermediateSize { get; init; }

    /// <summary><c>num_hidden_layers</c>.</summary>
    public int NumLayers { get; init; }

    /// <summary><c>num_attention_heads</c> (query heads).</summary>
    public int NumHeads { get; init; }

    /// <summary><c>num_key_value_heads</c> (equal to <see cref="NumHeads"/> when the config omits it).</summary>
    public int NumKvHeads { get; init; }

    /// <summary><c>head_dim</c>, or hidden_size / num_attention_heads.</summary>
    public int HeadDim { get; init; }

    public int MaxPositionEmbeddings { get; init; }

    public float RmsNormEps { get; init; } = 1e-6f;

    /// <summary>Whether <c>lm_head</c> shares <c>model.embed_tokens.weight</c>.</summary>
    public bool TieWordEmbeddings { get; init; }

    /// <summary>Whether q_proj, k_proj and v_proj have biases (always for Qwen2; <c>attention_bias</c> for Llama).</summary>
    public bool AttentionBias { get; init; }

    /// <summary>Whether o_proj has a bias (Llama's <c>attention_bias</c> covers o_proj too; Qwen2's o_proj has none).</summary>
    public bool OutputBias { get; init; }

    /// <summary>Whether gate/up/down projections have biases (Llama's <c>mlp_bias</c>).</summary>
    public bool MlpBias { get; init; }

    /// <summary>The attention window in tokens, or <see langword="null"/> for full attention.</summary>
    public int? SlidingWindow { get; init; }

    /// <summary>
    /// Per layer, whether <see cref="SlidingWindow"/> applies to it (Qwen2 windows only layers from
    /// <c>max_window_layers</c> on, or as its <c>layer_types</c> say). Empty means every layer.
    /// </summary>
    public IReadOnlyList<bool> SlidingWindowLayers { get; init; } = [];

    public RopeConfig Rope { get; init; } = new();

    public int? BosTokenId { get; init; }

    /// <summary>The end-of-sequence ids (<c>eos_token_id</c> may be one id or a list).</summary>
    public int[] EosTokenIds { get; init; } = [];

    /// <summary>The checkpoint's stored dtype (<c>dtype</c> or <c>torch_dtype</c>), when stated.</summary>
    public DType? TorchDType { get; init; }

    /// <summary>The MLP activation; only "silu" is supported.</summary>
    public string HiddenAct { get; init; } = "silu";

    /// <summary>The architectures <see cref="Load"/> accepts, by their <c>architectures</c> class name.</summary>
    public static IReadOnlyList<string> SupportedArchitectures { get; } = [.. s_architectures.Select(a => a.ClassName)];

    /// <summary>Query width: <see cref="NumHeads"/> × <see cref="HeadDim"/>.</summary>
    public int QueryDim => NumHeads * HeadDim;

    /// <summary>Key/value width: <see cref="NumKvHeads"/> × <see cref="HeadDim"/>.</summary>
    public int KvDim => NumKvHeads * HeadDim;

    /// <summary>Whether layer <paramref name="layer"/> attends through the sliding window.</summary>
    public bool UsesSlidingWindow(int layer) =>
        SlidingWindow is not null && (SlidingWindowLayers.Count == 0 || SlidingWindowLayers[layer]);

    /// <summary>Reads and validates a <c>config.json</c>.</summary>
    /// <exception cref="InvalidModelException">The file is missing or malformed, names an unsupported
    /// architecture, lacks a required field or holds inconsistent values.</exception>
    public static ModelConfig Load(string configJsonPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(configJsonPath);
        string path = Path.GetFullPath(configJsonPath);
        using JsonDocument document = JsonFields.ParseFile(path);
        JsonElement root = JsonFields.RootObject(document, path);

        ModelArchitecture architecture = ReadArchitecture(root, path);
        int hiddenSize = JsonFields.RequiredInt(root, "hidden_size", path, "hidden_size");
        int numHeads = JsonFields.RequiredInt(root, "num_attention_heads", path, "num_attention_heads");
        int numLayers = JsonFields.RequiredInt(root, "num_hidden_layers", path, "num_hidden_layers");
        int maxPositions = JsonFields.RequiredInt(root, "max_position_embeddings", path, "max_position_embeddings");
        RequirePositive(path, "hidden_size", hiddenSize);
        RequirePositive(path, "num_attention_heads", numHeads);
        RequirePositive(path, "num_hidden_layers", numLayers);
        RequirePositive(path, "max_position_embeddings", maxPositions);

        int? headDim = JsonFields.Int(root, "head_dim", path, "head_dim");
        if (headDim is null && hiddenSize % numHeads != 0)
        {
            throw new InvalidModelException(
                path, $"field 'hidden_size' ({hiddenSize}) is not divisible by 'num_attention_heads' ({numHeads}) and there is no 'head_dim'.");
        }

        bool llamaBias = architecture == ModelArchitecture.Llama
            && (JsonFields.Bool(root, "attention_bias", path, "attention_bias") ?? false);

        var config = new ModelConfig
        {
            Architecture = architecture,
            VocabSize = JsonFields.RequiredInt(root, "vocab_size", path, "vocab_size"),
            HiddenSize = hiddenSize,
            IntermediateSize = JsonFields.RequiredInt(root, "intermediate_size", path, "intermediate_size"),
            NumLayers = numLayers,
            NumHeads = numHeads,
            NumKvHeads = JsonFields.Int(root, "num_key_value_heads", path, "num_key_value_heads") ?? numHeads,
            HeadDim = headDim ?? hiddenSize / numHeads,
            MaxPositionEmbeddings = maxPositions,
            RmsNormEps = (float)(JsonFields.Double(root, "rms_norm_eps", path, "rms_norm_eps") ?? 1e-6),
            TieWordEmbeddings = JsonFields.Bool(root, "tie_word_embeddings", path, "tie_word_embeddings") ?? false,
            AttentionBias = architecture == ModelArchitecture.Qwen2 || llamaBias,
            OutputBias = llamaBias,
            MlpBias = architecture == ModelArchitecture.Llama && (JsonFields.Bool(root, "mlp_bias", path, "mlp_bias") ?? false),
            Rope = RopeConfig.Read(root, path, maxPositions),
            BosTokenId = JsonFields.Int(root, "bos_token_id", path, "bos_token_id"),
            EosTokenIds = ReadEosIds(root, path),
            TorchDType = ReadDType(root, path),
            HiddenAct = JsonFields.String(root, "hidden_act", path, "hidden_act") ?? "silu",
        };

        (int? window, bool[] layers) = ReadSlidingWindow(root, path, architecture, numLayers);
        config = config with { SlidingWindow = window, SlidingWindowLayers = layers };
        config.Validate(path);
        return config;
    }

    /// <summary>
    /// The KV capacity of a new session, the same rule on every engine: <paramref name="capacity"/> positions, or the
    /// model's maximum (<see cref="MaxPositionEmbeddings"/>) for 0.
    /// </summary>
    public int SessionCapacity(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        return capacity == 0 ? MaxPositionEmbeddings : capacity;
    }

    /// <summary>Checks the values' consistency; <paramref name="source"/> names the file in the error.</summary>
    /// <exception cref="InvalidModelException">A size is not positive, heads do not divide evenly, and the like.</exception>
    public void Validate(string source)
    {
        RequirePositive(source, "vocab_size", VocabSize);
        RequirePositive(source, "hidden_size", HiddenSize);
        RequirePositive(source, "intermediate_size", IntermediateSize);
        RequirePositive(source, "num_hidden_layers", NumLayers);
        RequirePositive(source, "num_attention_heads", NumHeads);
        RequirePositive(source, "num_key_value_heads", NumKvHeads);
        RequirePositive(source, "head_dim", HeadDim);
        RequirePositive(source, "max_position_embeddings", MaxPositionEmbeddings);
        if (NumHeads % NumKvHeads != 0)
        {
            throw new InvalidModelException(
                source, $"field 'num_attention_heads' ({NumHeads}) is not a multiple of 'num_key_value_heads' ({NumKvHeads}).");
        }

        if (HeadDim % 2 != 0)
        {
            throw new InvalidModelException(source, $"field 'head_dim' is {HeadDim}; rotary embeddings need an even head dimension.");
        }

        if (!(RmsNormEps > 0) || !float.IsFinite(RmsNormEps))
        {
            throw new InvalidModelException(source, $"field 'rms_norm_eps' is {RmsNormEps}, not a positive number.");
        }

        if (HiddenAct != "silu")
        {
            throw new InvalidModelException(source, $"field 'hidden_act' is '{HiddenAct}'; only 'silu' is supported.");
        }

        if (SlidingWindow is <= 0)
        {
            throw new InvalidModelException(source, $"field 'sliding_window' is {SlidingWindow}, not a positive integer.");
        }

        if (SlidingWindowLayers.Count != 0 && SlidingWindowLayers.Count != NumLayers)
        {
            throw new InvalidModelException(
                source, $"field 'layer_types' has {SlidingWindowLayers.Count} entries but 'num_hidden_layers' is {NumLayers}.");
        }

        foreach (int id in EosTokenIds)
        {
            if (id < 0 || id >= VocabSize)
            {
                throw new InvalidModelException(source, $"field 'eos_token_id' holds {id}, outside the vocabulary [0, {VocabSize}).");
            }
        }

        if (BosTokenId is int bos && (bos < 0 || bos >= VocabSize))
        {
            throw new InvalidModelException(source, $"field 'bos_token_id' is {bos}, outside the vocabulary [0, {VocabSize}).");
        }
    }

    private static void RequirePositive(string path, string field, int value)
    {
        if (value <= 0)
        {
            throw new InvalidModelException(path, $"field '{field}' is {value}, not a positive integer.");
        }
    }

    private static ModelArchitecture ReadArchitecture(JsonElement root, string path)
    {
        string supported = string.Join(", ", s_architectures.Select(a => a.ClassName));
        if (JsonFields.TryGet(root, "architectures", out JsonElement architectures))
        {
            if (architectures.ValueKind != JsonValueKind.Array
                || architectures.GetArrayLength() == 0
                || architectures[0].ValueKind != JsonValueKind.String)
            {
                throw new InvalidModelException(
                    path, $"field 'architectures' is {JsonFields.Describe(architectures)}, not a non-empty list of class names.");
            }

            string name = architectures[0].GetString()!;
            foreach ((string className, _, ModelArchitecture architecture) in s_architectures)
            {
                if (name == className)
                {
                    return architecture;
                }
            }

            throw new InvalidModelException(
                path, $"architecture '{name}' (field 'architectures') is not supported; supported: {supported}.");
        }

        string? modelType = JsonFields.String(root, "model_type", path, "model_type")
            ?? throw JsonFields.Missing(path, "architectures");
        foreach ((_, string type, ModelArchitecture architecture) in s_architectures)
        {
            if (modelType == type)
            {
                return architecture;
            }
        }

        throw new InvalidModelException(
            path,
            $"model type '{modelType}' (field 'model_type') is not supported; supported: {supported} " +
            $"({string.Join(", ", s_architectures.Select(a => a.ModelType))}).");
    }

    private static int[] ReadEosIds(JsonElement root, string path)
    {
        if (!JsonFields.TryGet(root, "eos_token_id", out JsonElement value))
        {
            return [];
        }

        if (value.ValueKind == JsonValueKind.Number)
        {
            return [JsonFields.RequiredInt(root, "eos_token_id", path, "eos_token_id")];
        }

        if (value.ValueKind == JsonValueKind.Array)
        {
            var ids = new List<int>();
            foreach (JsonElement item in value.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out int id))
                {
                    throw new InvalidModelException(path, $"field 'eos_token_id' holds {JsonFields.Describe(item)}, not an integer.");
                }

                if (!ids.Contains(id))
                {
                    ids.Add(id);
                }
            }

            return [.. ids];
        }

        throw new InvalidModelException(path, $"field 'eos_token_id' is {JsonFields.Describe(value)}, not an integer or a list of integers.");
    }

    private static DType? ReadDType(JsonElement root, string path)
    {
        string field = JsonFields.TryGet(root, "dtype", out _) ? "dtype" : "torch_dtype";
        string? text = JsonFields.String(root, field, path, field);
        if (text is null)
        {
            return null;
        }

        return DTypeExtensions.TryParse(text, out DType dtype)
            ? dtype
            : throw new InvalidModelException(path, $"field '{field}' is '{text}'; supported: float32, float16, bfloat16.");
    }

    private static (int? Window, bool[] Layers) ReadSlidingWindow(JsonElement root, string path, ModelArchitecture architecture, int numLayers)
    {
        int? window = architecture switch
        {
            ModelArchitecture.Mistral => JsonFields.Int(root, "sliding_window", path, "sliding_window"),
            ModelArchitecture.Qwen2 when JsonFields.Bool(root, "use_sliding_window", path, "use_sliding_window") == true =>
                JsonFields.Int(root, "sliding_window", path, "sliding_window"),
            _ => null,
        };

        if (window is null)
        {
            return (null, []);
        }

        if (architecture != ModelArchitecture.Qwen2)
        {
            return (window, []);
        }

        bool[] layers = new bool[numLayers];
        if (JsonFields.TryGet(root, "layer_types", out JsonElement types))
        {
            if (types.ValueKind != JsonValueKind.Array || types.GetArrayLength() != numLayers)
            {
                throw new InvalidModelException(
                    path, $"field 'layer_types' is {JsonFields.Describe(types)}, not a list of {numLayers} layer types.");
            }

            int i = 0;
            foreach (JsonElement type in types.EnumerateArray())
            {
                layers[i] = type.ValueKind == JsonValueKind.String ? type.GetString() switch
                {
                    "sliding_attention" => true,
                    "full_attention" => false,
                    _ => throw new InvalidModelException(path, $"field 'layer_types' entry {i} is {JsonFields.Describe(type)}."),
                }
                : throw new InvalidModelException(path, $"field 'layer_types' entry {i} is {JsonFields.Describe(type)}, not a string.");
                i++;
            }
        }
        else
        {
            int firstWindowed = JsonFields.Int(root, "max_window_layers", path, "max_window_layers") ?? 28;
            for (int i = 0; i < numLayers; i++)
            {
                layers[i] = i >= firstWindowed;
            }
        }

        return (window, layers);
    }
}
