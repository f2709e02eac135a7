using KvFetcher.Codecs;
using KvFetcher.Core;
using KvFetcher.Engine;

namespace KvFetcher.Fetch.Calibration;

/// <summary>Measures a model's <see cref="CalibrationProfile"/>: every variant through the <see cref="AccuracyEvaluator"/>.</summary>
public static class Calibrator
{
    /// <summary>Every level of every codec that can run in this process, lossless ones first: the full variant ladder.</summary>
    public static IReadOnlyList<KvVariant> AllVariants() =>
        [.. KvCodecs.All.Where(c => c.Unavailable is null).SelectMany(c => c.Levels.Select(l => new KvVariant(c.Id, (byte)l)))];

    /// <summary>
    /// Measures <paramref name="variants"/> (default: <see cref="AllVariants"/>) on <paramref name="model"/> over
    /// <paramref name="documents"/> and returns the profile, bound to the model's fingerprint.
    /// </summary>
    public static CalibrationProfile Measure(LanguageModel model, IReadOnlyList<EvaluationDocument> documents, IReadOnlyList<KvVariant>? variants = null,
        AccuracyEvaluationOptions? options = null, Action<int, IReadOnlyList<VariantAccuracy>>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(documents);
        var evaluator = new AccuracyEvaluator(model, options);
        IReadOnlyList<VariantAccuracy> results = evaluator.Evaluate([.. documents.Select(d => d.Tokens)], variants ?? AllVariants(), progress);
        AccuracyEvaluationOptions o = evaluator.Options;
        return new CalibrationProfile
        {
            ModelFingerprint = model.Fingerprint.ToString(),
            Model = Path.GetFileName(Path.TrimEndingDirectorySeparator(model.Directory)),
            Created = DateTimeOffset.UtcNow,
            Evaluation = new ProfileEvaluation([.. documents.Select(d => Path.GetFileName(d.Path))], o.PrefixTokens, o.ContinuationTokens, o.GreedyTokens,
                o.ChunkTokens, model.KvStorageDType.ToShortName()),
            Variants = [.. results.Select(ProfiledVariant.From)],
        };
    }
}
