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
            p.GetProperty("greedy_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
            p.TryGetProperty("greedy_top2_gap", out JsonElement gaps) ? gaps.EnumerateArray().Select(e => e.GetSingle()).ToArray() : [])).ToArray();
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

    /// <summary>
    /// One prompt. <see cref="GreedyTop2Gap"/> holds, per greedy step, the reference's top-1 minus top-2 logit (empty
    /// in fixtures that lack it).
    /// </summary>
    internal sealed record Prompt(string Name, string Text, int[] InputIds, int[] LogitPositions, int[] GreedyIds, float[] GreedyTop2Gap)
    {
        /// <summary>
        /// How many leading greedy steps any implementation within <paramref name="logitTolerance"/> of the reference
        /// must reproduce: the steps before the first one whose top-2 gap is at most twice the tolerance (there, and so
        /// afterwards, a correct implementation may pick the other token). All steps when the gaps are unknown.
        /// </summary>
        public int DecidedSteps(float logitTolerance)
        {
            for (int i = 0; i < GreedyTop2Gap.Length && i < GreedyIds.Length; i++)
            {
                if (GreedyTop2Gap[i] <= 2 * logitTolerance)
                {
                    return i;
                }
            }

            return GreedyIds.Length;
        }
    }
}
