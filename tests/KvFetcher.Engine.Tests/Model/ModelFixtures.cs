using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using KvFetcher.Core;
using KvFetcher.Engine.Model;
using KvFetcher.Engine.Tests.Tokenization;

namespace KvFetcher.Engine.Tests.Model;

/// <summary>Writers for small model directories and hand-made safetensors files.</summary>
internal static class ModelFixtures
{
    public const int Hidden = 8;
    public const int Intermediate = 12;
    public const int Layers = 2;
    public const int Heads = 2;
    public const int KvHeads = 1;
    public const int HeadDim = 4;

    /// <summary>Writes a safetensors file with the given header text and data bytes, as-is.</summary>
    public static void WriteRaw(string path, string header, byte[] data, ulong? headerLength = null)
    {
        byte[] headerBytes = Encoding.UTF8.GetBytes(header);
        byte[] prefix = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(prefix, headerLength ?? (ulong)headerBytes.Length);
        using var stream = File.Create(path);
        stream.Write(prefix);
        stream.Write(headerBytes);
        stream.Write(data);
    }

    public static byte[] F32Bytes(params float[] values) => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    /// <summary>A tiny config.json of the given architecture, vocabulary sized to fit the tokenizer fixture.</summary>
    public static JsonObject Config(string architecture = "LlamaForCausalLM", int? vocabSize = null) => new()
    {
        ["architectures"] = new JsonArray(architecture),
        ["model_type"] = architecture switch
        {
            "Qwen2ForCausalLM" => "qwen2",
            "MistralForCausalLM" => "mistral",
            _ => "llama",
        },
        ["vocab_size"] = vocabSize ?? new TokenizerFixture().TotalSize + 4,
        ["hidden_size"] = Hidden,
        ["intermediate_size"] = Intermediate,
        ["num_hidden_layers"] = Layers,
        ["num_attention_heads"] = Heads,
        ["num_key_value_heads"] = KvHeads,
        ["max_position_embeddings"] = 64,
        ["rms_norm_eps"] = 1e-5,
        ["rope_theta"] = 10000.0,
        ["hidden_act"] = "silu",
        ["tie_word_embeddings"] = false,
        ["bos_token_id"] = new TokenizerFixture().AddedId("<|begin_of_text|>"),
        ["eos_token_id"] = new TokenizerFixture().AddedId("<|eot_id|>"),
        ["torch_dtype"] = "bfloat16",
    };

    public static string WriteConfig(string directory, JsonObject config)
    {
        string path = Path.Combine(directory, "config.json");
        File.WriteAllText(path, config.ToJsonString());
        return path;
    }

    /// <summary>The tensors of the tiny model, listed by hand (independently of LoadedModel.RequiredTensors).</summary>
    public static List<(string Name, int[] Shape)> TinyTensors(int vocabSize, bool qkvBias = false, bool tied = false)
    {
        var tensors = new List<(string, int[])> { ("model.embed_tokens.weight", [vocabSize, Hidden]) };
        for (int i = 0; i < Layers; i++)
        {
            string p = $"model.layers.{i}.";
            tensors.Add((p + "input_layernorm.weight", [Hidden]));
            tensors.Add((p + "self_attn.q_proj.weight", [Heads * HeadDim, Hidden]));
            tensors.Add((p + "self_attn.k_proj.weight", [KvHeads * HeadDim, Hidden]));
            tensors.Add((p + "self_attn.v_proj.weight", [KvHeads * HeadDim, Hidden]));
            if (qkvBias)
            {
                tensors.Add((p + "self_attn.q_proj.bias", [Heads * HeadDim]));
                tensors.Add((p + "self_attn.k_proj.bias", [KvHeads * HeadDim]));
                tensors.Add((p + "self_attn.v_proj.bias", [KvHeads * HeadDim]));
            }

            tensors.Add((p + "self_attn.o_proj.weight", [Hidden, Heads * HeadDim]));
            tensors.Add((p + "post_attention_layernorm.weight", [Hidden]));
            tensors.Add((p + "mlp.gate_proj.weight", [Intermediate, Hidden]));
            tensors.Add((p + "mlp.up_proj.weight", [Intermediate, Hidden]));
            tensors.Add((p + "mlp.down_proj.weight", [Hidden, Intermediate]));
        }

        tensors.Add(("model.norm.weight", [Hidden]));
        if (!tied)
        {
            tensors.Add(("lm_head.weight", [vocabSize, Hidden]));
        }

        return tensors;
    }

    /// <summary>Writes <paramref name="tensors"/> as bf16 (values from the tensor index) in one file or two shards.</summary>
    public static void WriteWeights(string directory, IEnumerable<(string Name, int[] Shape)> tensors, bool sharded = false)
    {
        var all = tensors
            .Select((t, index) => (t.Name, DType.BFloat16, t.Shape, (ReadOnlyMemory<byte>)Bf16Filled(t.Shape, index)))
            .ToList();
        if (!sharded)
        {
            SafeTensorsWriter.Write(Path.Combine(directory, "model.safetensors"), all);
            return;
        }

        int half = all.Count / 2;
        var first = all.Take(half).ToList();
        var second = all.Skip(half).ToList();
        SafeTensorsWriter.Write(Path.Combine(directory, "model-00001-of-00002.safetensors"), first);
        SafeTensorsWriter.Write(Path.Combine(directory, "model-00002-of-00002.safetensors"), second);
        var map = new JsonObject();
        foreach (var t in first)
        {
            map[t.Name] = "model-00001-of-00002.safetensors";
        }

        foreach (var t in second)
        {
            map[t.Name] = "model-00002-of-00002.safetensors";
        }

        var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = 0 }, ["weight_map"] = map };
        File.WriteAllText(Path.Combine(directory, "model.safetensors.index.json"), index.ToJsonString());
    }

    /// <summary>A whole tiny model directory: config, weights and tokenizer.</summary>
    public static void WriteTinyModel(
        string directory,
        string architecture = "LlamaForCausalLM",
        bool sharded = false,
        Func<(string Name, int[] Shape), bool>? keep = null,
        Action<JsonObject>? editConfig = null)
    {
        JsonObject config = Config(architecture);
        editConfig?.Invoke(config);
        WriteConfig(directory, config);
        int vocab = (int)config["vocab_size"]!;
        bool tied = config["tie_word_embeddings"]?.GetValue<bool>() ?? false;
        var tensors = TinyTensors(vocab, qkvBias: architecture == "Qwen2ForCausalLM", tied: tied);
        WriteWeights(directory, tensors.Where(t => keep?.Invoke(t) ?? true), sharded);
        new TokenizerFixture().WriteTo(directory);
    }

    private static byte[] Bf16Filled(int[] shape, int seed)
    {
        int count = shape.Aggregate(1, (a, b) => a * b);
        byte[] bytes = new byte[count * 2];
        for (int i = 0; i < count; i++)
        {
            float value = (seed * 0.25f) + (i * 0.5f);
            BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(i * 2), Core.Numerics.FloatConversions.SingleToBFloat16(value));
        }

        return bytes;
    }
}
