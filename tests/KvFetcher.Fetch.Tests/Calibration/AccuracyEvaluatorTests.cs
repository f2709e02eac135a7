using KvFetcher.Core;
using KvFetcher.Engine;
using KvFetcher.Fetch.Calibration;
using KvFetcher.Tests;

namespace KvFetcher.Fetch.Tests.Calibration;

/// <summary>The accuracy evaluator on a tiny model: lossless variants measure perfect, a coarse lossy one does not.</summary>
public sealed class AccuracyEvaluatorTests
{
    private static readonly AccuracyEvaluationOptions s_options = new() { PrefixTokens = 256, ContinuationTokens = 64, GreedyTokens = 8 };

    [Fact]
    public void Evaluate_LosslessAndCoarseLossyVariants_PerfectOnlyForLossless()
    {
        using LanguageModel model = LanguageModel.Open(Path.Combine(Repository.Root, "tests", "TestData", "models", "tiny-llama3-rope"),
            new LanguageModelOptions { KvStorageDType = DType.Float16, Threads = 1 });
        var evaluator = new AccuracyEvaluator(model, s_options);
        IReadOnlyList<EvaluationDocument> documents = EvaluationDocuments.Load(model.Tokenizer, [Path.Combine(Repository.Root, "data", "heldout")], evaluator.TokensNeeded, 2);
        KvVariant coarse = KvVariant.Parse("cachegen2");

        IReadOnlyList<VariantAccuracy> results = evaluator.Evaluate([.. documents.Select(d => d.Tokens)], [KvVariant.Raw, KvVariant.Exact, coarse]);

        Assert.Equal(2, documents.Count);
        foreach (VariantAccuracy lossless in results.Take(2))
        {
            Assert.Equal(1.0, lossless.Top1Agreement);
            Assert.Equal(0.0, lossless.PerplexityChange);
            Assert.Equal(1.0, lossless.GreedyMatch);
            Assert.Equal(2 * 63, lossless.ScoredTokens);
        }

        Assert.Equal(1.0, results[0].RatioVsFp16, 2); // raw: the container's header only
        VariantAccuracy lossy = results[2];
        Assert.True(lossy.Top1Agreement < 1.0, $"cachegen2 agreed on every position ({lossy.Top1Agreement:P2})");
        Assert.NotEqual(0.0, lossy.PerplexityChange);
        Assert.True(lossy.RatioVsFp16 > 3);
    }

    [Fact]
    public void Evaluate_DocumentTooShort_Throws()
    {
        using LanguageModel model = LanguageModel.Open(Path.Combine(Repository.Root, "tests", "TestData", "models", "tiny-llama3-rope"));
        var evaluator = new AccuracyEvaluator(model, s_options);

        Assert.Throws<ArgumentException>(() => evaluator.Evaluate([new int[evaluator.TokensNeeded - 1]], [KvVariant.Raw]));
    }

    [Fact]
    public void Options_PrefixNotWholeChunks_Throws() =>
        Assert.Throws<ArgumentException>(() => new AccuracyEvaluationOptions { PrefixTokens = 300 }.Validate());
}
