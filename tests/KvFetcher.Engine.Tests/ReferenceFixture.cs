using System.Text.Json;
using KvFetcher.Engine.Model;

namespace KvFetcher.Engine.Tests;

/// <summary>
/// Reference outputs computed by Hugging Face transformers in fp32 (tools/train/train.py): fixture.json holds the
/// prompts, their token ids, the positions whose logits were kept and the greedy continuations; fixture.safetensors
/// holds the logits (p{i}.logits [positions, vocab]) and, for one prompt, the KV cache (kv.{layer}.key/value
/// [kvHeads, tokens, headDim]).
/// </summary>
internal sealed class ReferenceFixture : IDisposable
{
    private readonly SafeTensorsFile _tensors;

    private ReferenceFixture(string directory)
    {
        using JsonDocument json = JsonDocument.Parse(File.ReadAllText(Path.Combine(directory, "fixture.json")));
        JsonElement root = json.RootElement;
        Prompts = root.GetProperty("prompts").EnumerateArray().Select(p => new Prompt(
            p.GetProperty("name").GetString()!,
            p.GetProperty("text").GetString()!,
            p.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
            p.GetProperty("logit_positions").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
            p.GetProperty("greedy_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray())).ToArray();
        KvPrompt = root.TryGetProperty("kv_prompt", out JsonElement kv) && kv.ValueKind == JsonValueKind.Number ? kv.GetInt32() : null;
        _tensors = SafeTensorsFile.Open(Path.Combine(directory, "fixture.safetensors"));
    }

    public IReadOnlyList<Prompt> Prompts { get; }

    public int? KvPrompt { get; }

    public static ReferenceFixture Open(string directory) => new(directory);

    /// <summary>The reference logits of prompt <paramref name="index"/>, [positions, vocab].</summary>
    public float[] Logits(int index) => _tensors.Get($"p{index}.logits").ToSingleArray();

    /// <summary>The reference keys or values of one layer, [kvHeads, tokens, headDim].</summary>
    public float[] Kv(int layer, bool keys) => _tensors.Get($"kv.{layer}.{(keys ? "key" : "value")}").ToSingleArray();

    public void Dispose() => _tensors.Dispose();

    internal sealed record Prompt(string Name, string Text, int[] InputIds, int[] LogitPositions, int[] GreedyIds);
}
