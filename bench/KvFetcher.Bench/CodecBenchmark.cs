using System.Globalization;
using System.Text.Json;
using KvFetcher.Codecs;
using KvFetcher.Codecs.Transform;
using KvFetcher.Core;
using KvFetcher.Engine;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Calibration;

namespace KvFetcher.Bench;

/// <summary>
/// <c>kvfetch-bench codecs</c>: every codec and level on real KV of a model over held-out documents (prose in
/// data/heldout, code in data/heldout-code): compression ratio vs fp16 (whole containers), single-thread encode/decode
/// MB/s, and accuracy measured by <see cref="AccuracyEvaluator"/> (the one definition <c>kvfetch calibrate</c> uses):
/// teacher-forced top-1 agreement and perplexity change of the continuation after the restored prefix, and greedy match.
/// </summary>
internal static class CodecBenchmark
{
    public static int Run(string[] args)
    {
        string model = BenchArgs.Option(args, "--model") ?? BenchArgs.BundledModel();
        IReadOnlyList<string> documents = BenchArgs.Option(args, "--documents")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            ?? EvaluationDocuments.FindHeldOut(BenchArgs.RepositoryRoot());
        var options = new AccuracyEvaluationOptions
        {
            PrefixTokens = int.Parse(BenchArgs.Option(args, "--prefix") ?? "2048", CultureInfo.InvariantCulture),
            ContinuationTokens = int.Parse(BenchArgs.Option(args, "--continuation") ?? "256", CultureInfo.InvariantCulture),
            GreedyTokens = int.Parse(BenchArgs.Option(args, "--greedy") ?? "64", CultureInfo.InvariantCulture),
        };
        options.Validate();
        int maxDocuments = int.Parse(BenchArgs.Option(args, "--max-documents") ?? "20", CultureInfo.InvariantCulture);
        string? jsonPath = BenchArgs.Option(args, "--json");
        string[]? only = BenchArgs.Option(args, "--codecs")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        using LanguageModel lm = LanguageModel.Open(model, new LanguageModelOptions { KvStorageDType = DType.Float16 });
        var evaluator = new AccuracyEvaluator(lm, options);
        IReadOnlyList<EvaluationDocument> docs = EvaluationDocuments.Load(lm.Tokenizer, documents, evaluator.TokensNeeded, maxDocuments);
        if (docs.Count == 0)
        {
            throw new ArgumentException($"No document in {string.Join(", ", documents)} has {evaluator.TokensNeeded} tokens.");
        }

        // kvtc: the model's transform from its directory when it was fitted to this model, else fitted here to documents
        // other than the measured ones (--kvtc-documents, default 6; saved next to the model only with --kvtc-save).
        if (only is null || only.Any(n => n.StartsWith("kvtc", StringComparison.OrdinalIgnoreCase)))
        {
            int fitDocuments = int.Parse(BenchArgs.Option(args, "--kvtc-documents") ?? "6", CultureInfo.InvariantCulture);
            KvtcTransform? transform = args.Contains("--kvtc-refit") ? null : TransformCalibration.TryLoad(model, lm.Fingerprint, out string? problem);
            if (transform is null)
            {
                IReadOnlyList<EvaluationDocument> sample = TransformCalibration.SampleDocuments(lm, documents, docs, 1024, fitDocuments, out bool disjoint);
                int exactHead = int.Parse(BenchArgs.Option(args, "--kvtc-exact-head") ?? "4", CultureInfo.InvariantCulture);
                int exactTail = int.Parse(BenchArgs.Option(args, "--kvtc-exact-tail") ?? "0", CultureInfo.InvariantCulture);
                int sensitivityDocuments = int.Parse(BenchArgs.Option(args, "--kvtc-sensitivity-documents") ?? "2", CultureInfo.InvariantCulture);
                float[]? bits = BenchArgs.Option(args, "--kvtc-bits")?.Split(',').Select(b => float.Parse(b, CultureInfo.InvariantCulture)).ToArray();
                KvtcKeyRotation? keys = args.Contains("--kvtc-keys-after-rope") ? KvtcKeyRotation.None : null; // the ablation: keys coded as stored
                transform = TransformCalibration.Fit(lm, sample, sensitivityDocuments: sensitivityDocuments, exactHead: exactHead, exactTail: exactTail, levelBits: bits, keyRotation: keys,
                    weighKeysByQueries: !args.Contains("--kvtc-keys-unweighted"),
                    groupLayers: int.Parse(BenchArgs.Option(args, "--kvtc-group") ?? KvtcFitter.DefaultGroupLayers.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture));
                KvtcTransforms.Register(transform);
                if (args.Contains("--kvtc-save"))
                {
                    transform.Save(KvtcTransform.PathIn(model));
                }

                Console.Error.WriteLine($"kvtc: transform fitted to {sample.Count} documents ({(disjoint ? "none of them measured" : "the measured ones: no other was long enough")}): {string.Join(", ", sample.Select(d => Path.GetFileName(d.Path)))}");
            }
            else
            {
                Console.Error.WriteLine($"kvtc: transform {transform.IdText[..12]} loaded from {model}");
            }

            for (int level = 0; level < KvtcTransform.LevelCount; level++)
            {
                Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"kvtc{level}: {transform.LevelBits(level)} nominal bits per value, {100 * transform.KeptVariance(level):F2}% of the variance kept (model)"));
            }
        }

        IReadOnlyList<KvVariant> variants = only is null
            ? Calibrator.AllVariants()
            : [.. only.SelectMany(name => name.Any(char.IsAsciiDigit) || KvCodecs.Get(name).Levels.Count == 1
                ? [KvVariant.Parse(name)]
                : KvCodecs.Get(name).Levels.Select(l => new KvVariant(KvCodecs.Get(name).Id, (byte)l)))];

        string? partialPath = BenchArgs.Option(args, "--partial");
        IReadOnlyList<VariantAccuracy> results = evaluator.Evaluate([.. docs.Select(d => d.Tokens)], variants, (d, soFar) =>
        {
            Console.Error.WriteLine($"[{d + 1}/{docs.Count}] {Path.GetFileName(docs[d].Path)}: {docs[d].Tokens.Length} tokens");
            if (partialPath is not null)
            {
                // The table over the documents so far, rewritten after each one (a long run can be stopped and still report).
                File.WriteAllText(partialPath, $"after {d + 1} of {docs.Count} documents ({Sources([.. docs.Take(d + 1)])}):\n\n{Table(soFar)}");
            }
        });

        Console.WriteLine($"{Path.GetFileName(Path.TrimEndingDirectorySeparator(model))} KV (fp16) of {docs.Count} held-out documents ({Sources(docs)}), " +
            $"{options.PrefixTokens}-token prefixes in {options.ChunkTokens}-token chunks, encoded, decoded and restored; accuracy of the next " +
            $"{options.ContinuationTokens} tokens teacher-forced ({results[0].ScoredTokens} predictions) and of {options.GreedyTokens} greedy tokens, restored vs exact KV; 1 thread.");
        Console.WriteLine(Table(results));
        if (jsonPath is not null)
        {
            File.WriteAllText(jsonPath, JsonSerializer.Serialize(results.ToDictionary(r => r.Variant.ToString(), ToDictionary), BenchJson.Default.DictionaryStringDictionaryStringDouble));
        }

        return 0;
    }

    /// <summary>The codec table as markdown.</summary>
    public static string Table(IReadOnlyList<VariantAccuracy> results)
    {
        var text = new System.Text.StringBuilder();
        text.AppendLine("| variant | ratio vs fp16 | top-1 agreement | perplexity change | greedy match | encode MB/s | decode MB/s |");
        text.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        foreach (VariantAccuracy r in results)
        {
            text.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {r.Variant} | {r.RatioVsFp16:F2} | {100 * r.Top1Agreement:F2}% | {100 * r.PerplexityChange:+0.000;-0.000;0.000}% | {100 * r.GreedyMatch:F1}% | {r.EncodeMBps:F0} | {r.DecodeMBps:F0} |"));
        }

        return text.ToString();
    }

    private static string Sources(IReadOnlyList<EvaluationDocument> docs) =>
        string.Join(", ", docs.GroupBy(d => Path.GetFileName(Path.GetDirectoryName(d.Path)!)).Select(g => $"{g.Count()} from {g.Key}"));

    private static Dictionary<string, double> ToDictionary(VariantAccuracy r) => new()
    {
        ["ratio_vs_fp16"] = r.RatioVsFp16,
        ["top1_agreement"] = r.Top1Agreement,
        ["perplexity_change"] = r.PerplexityChange,
        ["greedy_token_match"] = r.GreedyMatch,
        ["encode_mb_per_s"] = r.EncodeMBps,
        ["decode_mb_per_s"] = r.DecodeMBps,
        ["documents"] = r.Documents,
        ["scored_tokens"] = r.ScoredTokens,
    };
}
