using System.CommandLine;
using System.Globalization;
using KvFetcher.Codecs.Transform;
using KvFetcher.Core;
using KvFetcher.Engine;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Calibration;

namespace KvFetcher.Cli.Commands;

/// <summary>
/// <c>kvfetch calibrate --model DIR</c>: measures every codec variant on held-out text of the model (ratio, top-1
/// agreement, perplexity change, greedy match, encode/decode rates) and writes <c>DIR/kvfetcher-profile.json</c>, which
/// the accuracy floor reads: lossy variants are fetched only where this profile shows they pass it.
/// </summary>
internal static class CalibrateCommand
{
    public static Command Create()
    {
        Option<string?> model = CliOptions.Model();
        Option<string?> documents = new("--documents") { Description = "Sample text: folders of *.txt files or files, comma-separated (default: data/heldout and data/heldout-code of the enclosing checkout)." };
        Option<int> maxDocuments = new("--max-documents") { Description = "Documents to measure (taken in turn from each source).", DefaultValueFactory = _ => 20 };
        Option<int> prefix = new("--prefix") { Description = "Tokens of each document whose KV is encoded and restored (whole chunks).", DefaultValueFactory = _ => 1024 };
        Option<int> continuation = new("--continuation") { Description = "Tokens scored after the prefix (teacher-forced).", DefaultValueFactory = _ => 256 };
        Option<int> greedy = new("--greedy") { Description = "Greedy tokens compared after the prefix.", DefaultValueFactory = _ => 32 };
        Option<string?> variants = new("--variants") { Description = "Variants to measure, comma-separated (default: every level of every codec that runs here)." };
        Option<string?> output = new("--output", "-o") { Description = "Where to write the profile (default: kvfetcher-profile.json in the model directory)." };
        Option<int> threads = new("--threads") { Description = "Kernel threads (0: one per processor).", DefaultValueFactory = _ => 0 };
        Option<int> kvtcExactHead = new("--kvtc-exact-head") { Description = "Tokens at the start of every chunk the kvtc codec keeps exact (attention sinks).", DefaultValueFactory = _ => 4 };
        Option<int> kvtcExactTail = new("--kvtc-exact-tail") { Description = "Tokens at the end of every chunk the kvtc codec keeps exact.", DefaultValueFactory = _ => 0 };
        Option<int> kvtcDocuments = new("--kvtc-documents") { Description = "Documents (other than the measured ones where possible) whose KV the kvtc codec's PCA transform is fitted to; 0 keeps the transform already next to the model.", DefaultValueFactory = _ => 6 };
        var command = new Command("calibrate", "Measure every codec variant's accuracy and rates on this model and write its calibration profile next to it.")
        {
            model, documents, maxDocuments, prefix, continuation, greedy, variants, output, threads, kvtcDocuments, kvtcExactHead, kvtcExactTail,
        };
        command.SetAction(parse => CliOptions.Run(parse, () =>
        {
            string directory = CliOptions.ResolveModel(parse.GetValue(model));
            var evaluation = new AccuracyEvaluationOptions
            {
                PrefixTokens = parse.GetValue(prefix),
                ContinuationTokens = parse.GetValue(continuation),
                GreedyTokens = parse.GetValue(greedy),
            };
            evaluation.Validate();
            IReadOnlyList<string> sources = parse.GetValue(documents) is { } given
                ? given.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                : DefaultDocuments();
            using LanguageModel lm = LanguageModel.Open(directory, new LanguageModelOptions { KvStorageDType = DType.Float16, Threads = parse.GetValue(threads) });
            int needed = evaluation.PrefixTokens + evaluation.ContinuationTokens;
            IReadOnlyList<EvaluationDocument> docs = EvaluationDocuments.Load(lm.Tokenizer, sources, needed, parse.GetValue(maxDocuments));
            if (docs.Count == 0)
            {
                throw new ArgumentException($"No document in {string.Join(", ", sources)} has the {needed} tokens a measurement needs.");
            }

            // The kvtc transform first (fitted to this model, written next to it), so that its levels are measured too.
            PrepareKvtc(lm, directory, sources, docs, parse.GetValue(kvtcDocuments), parse.GetValue(kvtcExactHead), parse.GetValue(kvtcExactTail));
            IReadOnlyList<KvVariant> ladder = parse.GetValue(variants) is { } list
                ? [.. list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(KvVariant.Parse)]
                : Calibrator.AllVariants();
            Console.Error.WriteLine($"kvfetch calibrate: {Path.GetFileName(directory)}, {docs.Count} documents from {string.Join(", ", sources)}; {ladder.Count} variants: {string.Join(", ", ladder)}");
            CalibrationProfile profile = Calibrator.Measure(lm, docs, ladder, evaluation,
                (d, _) => Console.Error.WriteLine($"  [{d + 1}/{docs.Count}] {Path.GetFileName(docs[d].Path)}"));
            string path = parse.GetValue(output) ?? CalibrationProfile.PathIn(directory);
            profile.Save(path);
            Print(profile);
            Console.Out.WriteLine($"wrote {path} (model {profile.ModelFingerprint[..16]}...)");
            foreach (string line in AccuracyFloor.Default.Decide(ladder, profile, lm.Fingerprint).Describe())
            {
                Console.Out.WriteLine(line);
            }

            return 0;
        }));
        return command;
    }

    /// <summary>Fits the kvtc transform to <paramref name="fitDocuments"/> sample documents and saves it next to the model, or loads the one there (0).</summary>
    private static void PrepareKvtc(LanguageModel lm, string directory, IReadOnlyList<string> sources, IReadOnlyList<EvaluationDocument> measured, int fitDocuments,
        int exactHead, int exactTail)
    {
        if (fitDocuments <= 0)
        {
            KvtcTransform? existing = TransformCalibration.TryLoad(directory, lm.Fingerprint, out string? problem);
            Console.Error.WriteLine(existing is null ? $"kvtc: {problem}; kvtc is not measured" : $"kvtc: transform {existing.IdText[..12]} loaded");
            return;
        }

        IReadOnlyList<EvaluationDocument> sample = TransformCalibration.SampleDocuments(lm, sources, measured, 1024, fitDocuments, out bool disjoint);
        Console.Error.WriteLine($"kvtc: fitting the PCA transform to the KV of {sample.Count} documents{(disjoint ? " not among the measured ones" : " (all are measured ones: no other document was long enough)")}");
        KvtcTransform transform = TransformCalibration.Fit(lm, sample, exactHead: exactHead, exactTail: exactTail);
        string path = KvtcTransform.PathIn(directory);
        transform.Save(path);
        KvtcTransforms.Register(transform);
        Console.Error.WriteLine($"kvtc: wrote {path} (transform {transform.IdText[..12]}, model {lm.Fingerprint.ToString()[..12]}...)");
    }

    private static IReadOnlyList<string> DefaultDocuments()
    {
        IReadOnlyList<string> found = EvaluationDocuments.FindHeldOut(Directory.GetCurrentDirectory());
        if (found.Count == 0)
        {
            found = EvaluationDocuments.FindHeldOut(AppContext.BaseDirectory);
        }

        return found.Count > 0 ? found : throw new ArgumentException("No data/heldout folder was found above the current folder or the executable; pass --documents.");
    }

    private static void Print(CalibrationProfile profile)
    {
        Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{"variant",-10} {"ratio",6} {"top-1",8} {"ppl change",11} {"greedy",8} {"enc MB/s",9} {"dec MB/s",9}"));
        foreach (ProfiledVariant v in profile.Variants)
        {
            Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{v.Variant,-10} {v.RatioVsFp16,6:F2} {100 * v.Top1Agreement,7:F2}% {100 * v.PerplexityChange,10:+0.000;-0.000;0.000}% {100 * v.GreedyMatch,7:F1}% {v.EncodeMBps,9:F0} {v.DecodeMBps,9:F0}"));
        }
    }
}
