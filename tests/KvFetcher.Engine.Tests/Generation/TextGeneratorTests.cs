using KvFetcher.Engine.Generation;

namespace KvFetcher.Engine.Tests.Generation;

public class TextGeneratorTests
{
    [Fact]
    public void Generate_StopsAtEos_AndReportsStats()
    {
        using var model = LanguageModel.Open(TestData.BundledModel);
        int[] prompt = model.Tokenizer.Encode("The json module");
        InferenceSession session = model.CreateSession(prompt.Length + 32);
        var generator = new TextGenerator(session, new SamplingOptions { MaxTokens = 32 });
        int[] tokens = generator.Generate(prompt).ToArray();
        Assert.InRange(tokens.Length, 1, 32);
        int eosIndex = Array.FindIndex(tokens, model.Tokenizer.EosIds.Contains);
        Assert.True(eosIndex < 0 || eosIndex == tokens.Length - 1, "generation continued past an EOS token");
        GenerationStats stats = generator.Stats!;
        Assert.Equal(prompt.Length, stats.PromptTokens);
        Assert.Equal(tokens.Length - 1, stats.DecodeTokens);
        Assert.Equal(ParityTests.Greedy(model, prompt, tokens.Length), tokens);
    }

    [Fact]
    public void Generate_ReusesCachedPrefix_SameTokensAsFullPrefill()
    {
        using var model = LanguageModel.Open(TestData.BundledModel);
        int[] prompt = model.Tokenizer.Encode("Lists are mutable sequences, typically used to store collections of homogeneous items.");
        var options = new SamplingOptions { MaxTokens = 16, StopAtEos = false };
        int[] full = new TextGenerator(model.CreateSession(64), options).Generate(prompt).ToArray();

        InferenceSession session = model.CreateSession(64);
        session.Prefill(prompt.AsSpan(0, 10), 0, new float[model.Config.VocabSize]);
        var generator = new TextGenerator(session, options);
        int[] reused = generator.Generate(prompt).ToArray();
        Assert.Equal(full, reused);
        Assert.Equal(10, generator.Stats!.ReusedTokens);
    }

    [Fact]
    public void Generate_PromptLongerThanContext_Throws()
    {
        using var model = LanguageModel.Open(TestData.BundledModel);
        var generator = new TextGenerator(model.CreateSession(16), new SamplingOptions { MaxTokens = 8 });
        Assert.Throws<ArgumentOutOfRangeException>(() => generator.Generate(new int[12]));
    }
}
