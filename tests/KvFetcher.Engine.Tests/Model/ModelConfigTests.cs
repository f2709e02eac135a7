using System.Text.Json.Nodes;
using KvFetcher.Core;
using KvFetcher.Engine.Model;

namespace KvFetcher.Engine.Tests.Model;

public sealed class ModelConfigTests : IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void Load_LlamaConfig_ReadsFieldsAndAppliesDefaults()
    {
        JsonObject json = Config(new JsonObject
        {
            ["architectures"] = new JsonArray("LlamaForCausalLM"),
            ["vocab_size"] = 128256,
            ["hidden_size"] = 4096,
            ["intermediate_size"] = 14336,
            ["num_hidden_layers"] = 32,
            ["num_attention_heads"] = 32,
            ["num_key_value_heads"] = 8,
            ["max_position_embeddings"] = 131072,
            ["rms_norm_eps"] = 1e-5,
            ["rope_theta"] = 500000.0,
            ["bos_token_id"] = 128000,
            ["eos_token_id"] = new JsonArray(128001, 128008, 128009),
            ["torch_dtype"] = "bfloat16",
            ["hidden_act"] = "silu",
            ["tie_word_embeddings"] = false,
            ["attention_bias"] = false,
            ["mlp_bias"] = false,
        });

        ModelConfig config = Load(json);
        Assert.Equal(ModelArchitecture.Llama, config.Architecture);
        Assert.Equal(128256, config.VocabSize);
        Assert.Equal(4096, config.HiddenSize);
        Assert.Equal(14336, config.IntermediateSize);
        Assert.Equal(32, config.NumLayers);
        Assert.Equal(32, config.NumHeads);
        Assert.Equal(8, config.NumKvHeads);
        Assert.Equal(128, config.HeadDim);
        Assert.Equal(131072, config.MaxPositionEmbeddings);
        Assert.Equal(1e-5f, config.RmsNormEps);
        Assert.Equal(128000, config.BosTokenId);
        Assert.Equal([128001, 128008, 128009], config.EosTokenIds);
        Assert.Equal(DType.BFloat16, config.TorchDType);
        Assert.False(config.AttentionBias);
        Assert.False(config.OutputBias);
        Assert.Null(config.SlidingWindow);
        Assert.Equal("default", config.Rope.Type);
        Assert.Equal(500000.0, config.Rope.Theta);
    }

    [Fact]
    public void Load_MinimalConfig_UsesTransformersDefaults()
    {
        JsonObject json = Config();
        json.Remove("num_key_value_heads");
        json.Remove("rms_norm_eps");
        json.Remove("rope_theta");
        json.Remove("hidden_act");
        json.Remove("eos_token_id");
        json.Remove("torch_dtype");

        ModelConfig config = Load(json);
        Assert.Equal(config.NumHeads, config.NumKvHeads);
        Assert.Equal(1e-6f, config.RmsNormEps);
        Assert.Equal(10000.0, config.Rope.Theta);
        Assert.Equal("silu", config.HiddenAct);
        Assert.Empty(config.EosTokenIds);
        Assert.Null(config.TorchDType);
    }

    [Fact]
    public void Load_LlamaAttentionBias_AddsQkvAndOutputBiases()
    {
        ModelConfig config = Load(Config(new JsonObject { ["attention_bias"] = true, ["mlp_bias"] = true }));
        Assert.True(config.AttentionBias);
        Assert.True(config.OutputBias);
        Assert.True(config.MlpBias);
    }

    [Fact]
    public void Load_Qwen2_HasQkvBiasButNoOutputBiasAndWindowsOnlyWhenEnabled()
    {
        ModelConfig plain = Load(Config(new JsonObject
        {
            ["architectures"] = new JsonArray("Qwen2ForCausalLM"),
            ["sliding_window"] = 4096,
            ["use_sliding_window"] = false,
            ["attention_bias"] = false,
        }));
        Assert.Equal(ModelArchitecture.Qwen2, plain.Architecture);
        Assert.True(plain.AttentionBias);
        Assert.False(plain.OutputBias);
        Assert.Null(plain.SlidingWindow);
        Assert.False(plain.UsesSlidingWindow(0));

        ModelConfig windowed = Load(Config(new JsonObject
        {
            ["architectures"] = new JsonArray("Qwen2ForCausalLM"),
            ["sliding_window"] = 4096,
            ["use_sliding_window"] = true,
            ["max_window_layers"] = 1,
        }));
        Assert.Equal(4096, windowed.SlidingWindow);
        Assert.False(windowed.UsesSlidingWindow(0));
        Assert.True(windowed.UsesSlidingWindow(1));
    }

    [Fact]
    public void Load_Qwen2LayerTypes_DecidesWhichLayersWindow()
    {
        ModelConfig config = Load(Config(new JsonObject
        {
            ["architectures"] = new JsonArray("Qwen2ForCausalLM"),
            ["sliding_window"] = 32,
            ["use_sliding_window"] = true,
            ["layer_types"] = new JsonArray("sliding_attention", "full_attention"),
        }));
        Assert.True(config.UsesSlidingWindow(0));
        Assert.False(config.UsesSlidingWindow(1));
    }

    [Fact]
    public void Load_MistralSlidingWindow_AppliesToEveryLayer()
    {
        ModelConfig config = Load(Config(new JsonObject
        {
            ["architectures"] = new JsonArray("MistralForCausalLM"),
            ["sliding_window"] = 4096,
            ["head_dim"] = 128,
        }));
        Assert.Equal(ModelArchitecture.Mistral, config.Architecture);
        Assert.Equal(4096, config.SlidingWindow);
        Assert.Equal(128, config.HeadDim);
        Assert.True(config.UsesSlidingWindow(1));

        ModelConfig none = Load(Config(new JsonObject
        {
            ["architectures"] = new JsonArray("MistralForCausalLM"),
            ["sliding_window"] = null,
        }));
        Assert.Null(none.SlidingWindow);
    }

    [Theory]
    [InlineData("llama", ModelArchitecture.Llama)]
    [InlineData("mistral", ModelArchitecture.Mistral)]
    [InlineData("qwen2", ModelArchitecture.Qwen2)]
    public void Load_NoArchitecturesButModelType_UsesModelType(string modelType, ModelArchitecture expected)
    {
        JsonObject json = Config(new JsonObject { ["model_type"] = modelType });
        json.Remove("architectures");
        Assert.Equal(expected, Load(json).Architecture);
    }

    [Fact]
    public void Load_UnsupportedArchitecture_ThrowsNamingItAndListingSupported()
    {
        var e = Assert.Throws<InvalidModelException>(() => Load(Config(new JsonObject
        {
            ["architectures"] = new JsonArray("GPT2LMHeadModel"),
        })));
        Assert.Contains("'GPT2LMHeadModel'", e.Message, StringComparison.Ordinal);
        Assert.Contains("LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM", e.Message, StringComparison.Ordinal);
        Assert.Equal(_temp.File("config.json"), e.FilePath);
    }

    [Theory]
    [InlineData("vocab_size")]
    [InlineData("hidden_size")]
    [InlineData("intermediate_size")]
    [InlineData("num_hidden_layers")]
    [InlineData("num_attention_heads")]
    [InlineData("max_position_embeddings")]
    public void Load_MissingRequiredField_ThrowsNamingField(string field)
    {
        JsonObject json = Config();
        json.Remove(field);

        var e = Assert.Throws<InvalidModelException>(() => Load(json));
        Assert.Contains($"required field '{field}' is missing", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("num_key_value_heads", 3, "not a multiple")]
    [InlineData("hidden_size", 0, "'hidden_size' is 0")]
    [InlineData("head_dim", 5, "even head dimension")]
    [InlineData("vocab_size", "many", "'vocab_size' is \"many\"")]
    [InlineData("hidden_act", "gelu", "only 'silu'")]
    [InlineData("torch_dtype", "float8", "'float8'")]
    [InlineData("eos_token_id", 100000, "outside the vocabulary")]
    public void Load_InvalidValue_ThrowsNamingFieldAndValue(string field, object value, string expected)
    {
        JsonObject json = Config();
        json[field] = value switch
        {
            int number => JsonValue.Create(number),
            _ => JsonValue.Create((string)value),
        };

        var e = Assert.Throws<InvalidModelException>(() => Load(json));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_DtypeKey_PreferredOverTorchDtype()
    {
        ModelConfig config = Load(Config(new JsonObject { ["dtype"] = "float16", ["torch_dtype"] = "float32" }));
        Assert.Equal(DType.Float16, config.TorchDType);
    }

    [Fact]
    public void Load_OldRopeScalingLayout_ReadsTypeAndFactors()
    {
        ModelConfig config = Load(Config(new JsonObject
        {
            ["rope_theta"] = 500000.0,
            ["rope_scaling"] = new JsonObject
            {
                ["rope_type"] = "llama3",
                ["factor"] = 8.0,
                ["low_freq_factor"] = 1.0,
                ["high_freq_factor"] = 4.0,
                ["original_max_position_embeddings"] = 8192,
            },
        }));
        Assert.Equal("llama3", config.Rope.Type);
        Assert.Equal(500000.0, config.Rope.Theta);
        Assert.Equal(8.0, config.Rope.Factor);
        Assert.Equal(1.0, config.Rope.LowFreqFactor);
        Assert.Equal(4.0, config.Rope.HighFreqFactor);
        Assert.Equal(8192, config.Rope.OriginalMaxPositionEmbeddings);

        ModelConfig legacy = Load(Config(new JsonObject { ["rope_scaling"] = new JsonObject { ["type"] = "linear", ["factor"] = 2.0 } }));
        Assert.Equal("linear", legacy.Rope.Type);
        Assert.Equal(2.0, legacy.Rope.Factor);
    }

    [Fact]
    public void Load_RopeParametersLayout_ReadsThetaAndType()
    {
        JsonObject json = Config(new JsonObject
        {
            ["rope_parameters"] = new JsonObject
            {
                ["rope_theta"] = 1000000.0,
                ["rope_type"] = "yarn",
                ["factor"] = 4.0,
                ["original_max_position_embeddings"] = 32768,
                ["beta_fast"] = 32.0,
                ["truncate"] = false,
            },
        });
        json.Remove("rope_theta");

        ModelConfig config = Load(json);
        Assert.Equal("yarn", config.Rope.Type);
        Assert.Equal(1000000.0, config.Rope.Theta);
        Assert.Equal(4.0, config.Rope.Factor);
        Assert.Equal(32768, config.Rope.OriginalMaxPositionEmbeddings);
        Assert.Equal(32.0, config.Rope.BetaFast);
        Assert.False(config.Rope.Truncate);

        ModelConfig plain = Load(Config(new JsonObject { ["rope_parameters"] = new JsonObject { ["rope_theta"] = 20000.0, ["rope_type"] = "default" } }));
        Assert.Equal("default", plain.Rope.Type);
        Assert.Equal(20000.0, plain.Rope.Theta);
    }

    [Fact]
    public void Load_YarnWithoutFactor_DerivesItFromContextLengths()
    {
        ModelConfig config = Load(Config(new JsonObject
        {
            ["max_position_embeddings"] = 64,
            ["rope_scaling"] = new JsonObject { ["rope_type"] = "yarn", ["original_max_position_embeddings"] = 16 },
        }));
        Assert.Equal(4.0, config.Rope.Factor);
    }

    [Theory]
    [InlineData("""{"rope_type":"longrope","factor":2.0}""", "'longrope'")]
    [InlineData("""{"rope_type":"su"}""", "default, linear, dynamic, llama3, yarn")]
    [InlineData("""{"rope_type":"linear"}""", "'rope_scaling.factor' is missing")]
    [InlineData("""{"rope_type":"llama3","factor":8.0,"high_freq_factor":4.0}""", "'rope_scaling.low_freq_factor' is missing")]
    [InlineData("""{"rope_type":"llama3","factor":8.0,"low_freq_factor":4.0,"high_freq_factor":1.0}""", "0 < low < high")]
    [InlineData("""{"rope_type":"linear","factor":-1.0}""", "not a positive number")]
    public void Load_BadRopeScaling_ThrowsNamingFieldAndValue(string scaling, string expected)
    {
        var e = Assert.Throws<InvalidModelException>(() => Load(Config(new JsonObject { ["rope_scaling"] = JsonNode.Parse(scaling) })));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_MalformedJson_ThrowsNamingFile()
    {
        string path = _temp.File("config.json");
        File.WriteAllText(path, "{\"vocab_size\": 12,");

        var e = Assert.Throws<InvalidModelException>(() => ModelConfig.Load(path));
        Assert.Equal(path, e.FilePath);
        Assert.Contains("not valid JSON", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_MissingFile_ThrowsNamingFile()
    {
        string path = _temp.File("config.json");
        var e = Assert.Throws<InvalidModelException>(() => ModelConfig.Load(path));
        Assert.Equal(path, e.FilePath);
    }

    private static JsonObject Config(JsonObject? overrides = null)
    {
        JsonObject json = ModelFixtures.Config();
        if (overrides is not null)
        {
            foreach ((string key, JsonNode? value) in overrides.ToList())
            {
                overrides.Remove(key);
                json[key] = value;
            }
        }

        return json;
    }

    private ModelConfig Load(JsonObject json) => ModelConfig.Load(ModelFixtures.WriteConfig(_temp.Path, json));
}
