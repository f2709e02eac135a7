using KvFetcher.Codecs.Transform;
using KvFetcher.Core;
using KvFetcher.Engine;

namespace KvFetcher.Fetch.Calibration;

/// <summary>
/// Fits and loads the <c>kvtc</c> codec's per-model transform (<see cref="KvtcTransform"/>): sample KV of the model over
/// text, cut into chunks as the store cuts them, into a <see cref="KvtcFitter"/>. The transform lives next to the model
/// (<see cref="KvtcTransform.FileName"/>), beside the calibration profile, and is used only while its fingerprint is the
/// model's.
/// </summary>
public static class TransformCalibration
{
    /// <summary>
    /// Fits the transform of <paramref name="model"/> to the KV of the first <paramref name="tokensPerDocument"/> tokens
    /// of each of <paramref name="documents"/> (shorter ones in full), in <paramref name="chunkTokens"/>-token chunks.
    /// </summary>
    public static KvtcTransform Fit(LanguageModel model, IReadOnlyList<EvaluationDocument> documents, int tokensPerDocument = 1024, int chunkTokens = 256)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(documents);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkTokens, 1);
        if (documents.Count == 0)
        {
            throw new ArgumentException("A kvtc transform needs at least one sample document.", nameof(documents));
        }

        var config = model.Config;
        var fitter = new KvtcFitter(config.NumLayers, config.NumKvHeads, config.HeadDim);
        DType dtype = model.KvStorageDType;
        foreach (EvaluationDocument document in documents)
        {
            int tokens = Math.Min(tokensPerDocument, document.Tokens.Length) / chunkTokens * chunkTokens;
            if (tokens == 0)
            {
                continue;
            }

            using InferenceSession session = model.CreateSession(tokens);
            session.Prefill(document.Tokens.AsSpan(0, tokens), 0, new float[config.VocabSize]);
            var shape = new KvShape(config.NumLayers, chunkTokens, config.NumKvHeads, config.HeadDim);
            var chunk = new byte[shape.Elements * dtype.SizeOf()];
            for (int start = 0; start < tokens; start += chunkTokens)
            {
                session.Cache.Export(start, start + chunkTokens, dtype, chunk);
                fitter.Add(chunk, shape, dtype);
            }
        }

        return fitter.Build(model.Fingerprint);
    }

    /// <summary>
    /// Sample documents for fitting: those of <paramref name="sources"/> with at least <paramref name="tokens"/> tokens
    /// that are not among <paramref name="exclude"/> (the documents accuracy is measured on), at most
    /// <paramref name="maxDocuments"/>; when every document is excluded, the excluded ones (the caller says so).
    /// </summary>
    public static IReadOnlyList<EvaluationDocument> SampleDocuments(LanguageModel model, IReadOnlyList<string> sources, IReadOnlyList<EvaluationDocument> exclude,
        int tokens, int maxDocuments, out bool disjoint)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(exclude);
        var excluded = exclude.Select(d => Path.GetFullPath(d.Path)).ToHashSet(StringComparer.Ordinal);
        IReadOnlyList<EvaluationDocument> all = EvaluationDocuments.Load(model.Tokenizer, sources, tokens, exclude.Count + maxDocuments);
        EvaluationDocument[] rest = [.. all.Where(d => !excluded.Contains(Path.GetFullPath(d.Path))).Take(maxDocuments)];
        disjoint = rest.Length > 0;
        return disjoint ? rest : [.. exclude.Take(maxDocuments)];
    }

    /// <summary>
    /// Loads the transform in <paramref name="modelDirectory"/> and registers it for the kvtc codec when it exists and was
    /// fitted to this model; otherwise returns null and <paramref name="problem"/> says why (kvtc then stays unavailable).
    /// </summary>
    public static KvtcTransform? TryLoad(string modelDirectory, Core.Keys.ModelFingerprint fingerprint, out string? problem)
    {
        KvtcTransform? transform = KvtcTransform.TryLoadFrom(modelDirectory, fingerprint, out problem);
        if (transform is not null)
        {
            KvtcTransforms.Register(transform);
        }

        return transform;
    }
}
