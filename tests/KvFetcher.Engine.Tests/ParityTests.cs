using KvFetcher.Engine.Cpu;

namespace KvFetcher.Engine.Tests;

/// <summary>The engine against Hugging Face transformers' fp32 outputs on the bundled model and the tiny models.</summary>
public class ParityTests(ITestOutputHelper output)
{
    private const float LogitTolerance = 2e-3f;
    private const float KvTolerance = 1e-3f;

    /// <summary>The bundled model and every tiny model under tests/TestData/models that has a fixture.</summary>
    public static TheoryData<string> Models => [.. TestData.FixtureModelNames];

    private static (string Model, string Fixture) Paths(string name) => name == "bundled"
        ? (TestData.BundledModel, TestData.BundledFixture)
        : (TestData.TinyModel(name), TestData.Fixture(name));

    [Theory]
    [MemberData(nameof(Models))]
    public void Logits_MatchTransformers(string name)
    {
        (string modelDir, string fixtureDir) = Paths(name);
        using var model = LanguageModel.Open(modelDir);
        using var fixture = ReferenceFixture.Open(fixtureDir);
        int vocab = model.Config.VocabSize;
        for (int p = 0; p < fixture.Prompts.Count; p++)
        {
            ReferenceFixture.Prompt prompt = fixture.Prompts[p];
            InferenceSession session = model.CreateSession(prompt.InputIds.Length);
            var logits = new float[prompt.InputIds.Length * vocab];
            session.PrefillAllLogits(prompt.InputIds, 0, logits);
            float[] expected = fixture.Logits(p);
            float worst = 0;
            for (int r = 0; r < prompt.LogitPositions.Length; r++)
            {
                int position = prompt.LogitPositions[r];
                for (int v = 0; v < vocab; v++)
                {
                    worst = Math.Max(worst, Math.Abs(logits[(position * vocab) + v] - expected[(r * vocab) + v]));
                }
            }

            output.WriteLine($"{name} {prompt.Name} ({prompt.InputIds.Length} tokens): max |logit difference| {worst:E3}");
            Assert.True(worst <= LogitTolerance, $"{name} prompt {prompt.Name} ({prompt.InputIds.Length} tokens): max |logit difference| {worst:E3} > {LogitTolerance:E0}");
        }
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void GreedyContinuation_MatchesTransformers(string name)
    {
        (string modelDir, string fixtureDir) = Paths(name);
        using var model = LanguageModel.Open(modelDir);
        using var fixture = ReferenceFixture.Open(fixtureDir);
        foreach (ReferenceFixture.Prompt prompt in fixture.Prompts)
        {
            int decided = prompt.DecidedSteps(LogitTolerance);
            int[] actual = Greedy(model, prompt.InputIds, decided);
            output.WriteLine($"{name} {prompt.Name}: {decided} of {prompt.GreedyIds.Length} greedy steps decided by more than twice the logit tolerance");
            Assert.Equal(prompt.GreedyIds[..decided], actual);
        }
    }

    [Fact]
    public void KvCache_MatchesTransformers()
    {
        using var model = LanguageModel.Open(TestData.BundledModel);
        using var fixture = ReferenceFixture.Open(TestData.BundledFixture);
        ReferenceFixture.Prompt prompt = fixture.Prompts[fixture.KvPrompt!.Value];
        InferenceSession session = model.CreateSession(prompt.InputIds.Length);
        session.Prefill(prompt.InputIds, 0, new float[model.Config.VocabSize]);
        int tokens = prompt.InputIds.Length;
        int headDim = model.Config.HeadDim;
        float worst = 0;
        for (int layer = 0; layer < model.Config.NumLayers; layer++)
        {
            foreach (bool keys in new[] { true, false })
            {
                float[] expected = fixture.Kv(layer, keys);
                for (int head = 0; head < model.Config.NumKvHeads; head++)
                {
                    ReadOnlySpan<float> actual = keys ? session.Cache.Keys(layer, head) : session.Cache.Values(layer, head);
                    for (int i = 0; i < tokens * headDim; i++)
                    {
                        float e = expected[(head * tokens * headDim) + i];
                        worst = Math.Max(worst, Math.Abs(actual[i] - e));
                        Assert.True(Math.Abs(actual[i] - e) <= KvTolerance, $"layer {layer} {(keys ? "K" : "V")} head {head} element {i}: {actual[i]} vs {e}");
                    }
                }
            }
        }

        output.WriteLine($"KV of {tokens} tokens: max |difference| {worst:E3}");
    }

    [Fact]
    public void Tokenizer_MatchesTransformersIds()
    {
        using var model = LanguageModel.Open(TestData.BundledModel);
        using var fixture = ReferenceFixture.Open(TestData.BundledFixture);
        foreach (ReferenceFixture.Prompt prompt in fixture.Prompts)
        {
            Assert.Equal(prompt.InputIds, model.Tokenizer.Encode(prompt.Text));
        }
    }

    /// <summary>Plain argmax steps, ignoring EOS, as the fixture was made.</summary>
    internal static int[] Greedy(LanguageModel model, int[] prompt, int steps)
    {
        InferenceSession session = model.CreateSession(prompt.Length + steps);
        var logits = new float[model.Config.VocabSize];
        session.Prefill(prompt, 0, logits);
        var result = new int[steps];
        for (int i = 0; i < steps; i++)
        {
            result[i] = Kernels.ArgMax(logits);
            if (i + 1 < steps)
            {
                session.Decode(result[i], prompt.Length + i, logits);
            }
        }

        return result;
    }
}
