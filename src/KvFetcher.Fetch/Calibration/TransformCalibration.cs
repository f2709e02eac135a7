using System.Numerics.Tensors;
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
    /// of each of <paramref name="documents"/> (shorter ones in full), in <paramref name="chunkTokens"/>-token chunks,
    /// with bits allocated by the sensitivity measured on the first <paramref name="sensitivityDocuments"/> of them
    /// (<see cref="MeasureSensitivity"/>; 0: by variance alone), keeping <paramref name="exactHead"/> and
    /// <paramref name="exactTail"/> tokens of every chunk exact, with <paramref name="levelBits"/> per level (default
    /// <see cref="KvtcTransform.DefaultLevelBits"/>), keys before RoPE (<see cref="KeyRotationOf"/>) unless
    /// <paramref name="keyRotation"/> says otherwise (<see cref="KvtcKeyRotation.None"/>: as stored, for comparison);
    /// with <paramref name="weighKeysByQueries"/>, each key component's bits also follow how strongly the layer's queries
    /// read along it (<see cref="QueryMetric"/>); the transform spans <paramref name="groupLayers"/> neighbouring layers.
    /// </summary>
    public static KvtcTransform Fit(LanguageModel model, IReadOnlyList<EvaluationDocument> documents, int tokensPerDocument = 1024, int chunkTokens = 256,
        int sensitivityDocuments = 2, int exactHead = 4, int exactTail = 0, IReadOnlyList<float>? levelBits = null, KvtcKeyRotation? keyRotation = null,
        bool weighKeysByQueries = true, int groupLayers = KvtcFitter.DefaultGroupLayers)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(documents);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkTokens, 1);
        if (documents.Count == 0)
        {
            throw new ArgumentException("A kvtc transform needs at least one sample document.", nameof(documents));
        }

        var config = model.Config;
        keyRotation ??= KeyRotationOf(config);
        var fitter = new KvtcFitter(config.NumLayers, config.NumKvHeads, config.HeadDim, keyRotation, exactHead, exactTail, groupLayers);
        var queries = new QueryMetric(config, keyRotation);
        DType dtype = model.KvStorageDType;
        foreach (EvaluationDocument document in documents)
        {
            int tokens = Math.Min(tokensPerDocument, document.Tokens.Length) / chunkTokens * chunkTokens;
            if (tokens == 0)
            {
                continue;
            }

            using InferenceSession session = model.CreateSession(tokens);
            session.Probe = weighKeysByQueries ? queries : null;
            session.Prefill(document.Tokens.AsSpan(0, tokens), 0, new float[config.VocabSize]);
            var shape = new KvShape(config.NumLayers, chunkTokens, config.NumKvHeads, config.HeadDim);
            var chunk = new byte[shape.Elements * dtype.SizeOf()];
            for (int start = 0; start < tokens; start += chunkTokens)
            {
                session.Cache.Export(start, start + chunkTokens, dtype, chunk);
                fitter.Add(chunk, shape, dtype, start);
            }
        }

        IReadOnlyList<double>? sensitivity = sensitivityDocuments > 0
            ? MeasureSensitivity(model, [.. documents.Take(sensitivityDocuments)], fitter.ExactHead, chunkTokens)
            : null;
        return fitter.Build(model.Fingerprint, levelBits, sensitivity, weighKeysByQueries ? queries.Metric(tokensPerDocument) : null);
    }

    /// <summary>
    /// The rotary embedding of <paramref name="config"/>'s keys as the kvtc codec records it: the engines rotate channel
    /// pairs (i, i + headDim / 2) of each head (<see cref="KvtcKeyPairing.HalfSplit"/>) by position times the inverse
    /// frequencies of <see cref="Engine.Model.RopeConfig.Compute"/>. For <c>dynamic</c> scaling those of contexts up to
    /// <c>max_position_embeddings</c> (longer contexts rotate by a larger base; their keys then code less compactly, and
    /// still decode exactly as coded).
    /// </summary>
    public static KvtcKeyRotation KeyRotationOf(Engine.Model.ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        (float[] inverseFrequencies, _) = config.Rope.Compute(config.HeadDim, config.MaxPositionEmbeddings, config.MaxPositionEmbeddings);
        return new KvtcKeyRotation(KvtcKeyPairing.HalfSplit, inverseFrequencies);
    }

    /// <summary>
    /// Each plane's (layer * 2 + kind) sensitivity: the KL divergence of the next-token distributions over a continuation
    /// when isotropic Gaussian noise of <paramref name="relativeNoise"/> times the plane's variance is added to that
    /// plane of the restored prefix (the chunks' exact head tokens left alone), per unit of relative noise, averaged
    /// over <paramref name="documents"/>; floored at 5% of the mean so that no plane is written off on one measurement.
    /// </summary>
    public static IReadOnlyList<double> MeasureSensitivity(LanguageModel model, IReadOnlyList<EvaluationDocument> documents, int exactHead = 4,
        int chunkTokens = 256, int prefixTokens = 512, int continuationTokens = 64, double relativeNoise = 0.01)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(documents);
        var config = model.Config;
        int planes = config.NumLayers * 2;
        int c = config.NumKvHeads * config.HeadDim;
        int vocab = config.VocabSize;
        var sensitivity = new double[planes];
        int measured = 0;
        var random = new Random(15);
        foreach (EvaluationDocument document in documents)
        {
            if (document.Tokens.Length < prefixTokens + continuationTokens)
            {
                continue;
            }

            ReadOnlySpan<int> continuation = document.Tokens.AsSpan(prefixTokens, continuationTokens);
            using InferenceSession exact = model.CreateSession(prefixTokens + continuationTokens);
            exact.Prefill(document.Tokens.AsSpan(0, prefixTokens), 0, new float[vocab]);
            var kv = new float[(long)planes * prefixTokens * c];
            var kvBytes = new byte[kv.Length * 4];
            exact.Cache.Export(0, prefixTokens, DType.Float32, kvBytes);
            Buffer.BlockCopy(kvBytes, 0, kv, 0, kvBytes.Length);
            var reference = new float[continuationTokens * vocab];
            exact.PrefillAllLogits(continuation, prefixTokens, reference);
            LogSoftmaxRows(reference, vocab);

            var noisy = new float[kv.Length];
            var logits = new float[continuationTokens * vocab];
            for (int p = 0; p < planes; p++)
            {
                Span<float> plane = kv.AsSpan(p * prefixTokens * c, prefixTokens * c);
                double mean = 0, squares = 0;
                foreach (float v in plane)
                {
                    mean += v;
                    squares += (double)v * v;
                }

                mean /= plane.Length;
                double variancePerChannel = Math.Max(0, (squares / plane.Length) - (mean * mean));
                double std = Math.Sqrt(relativeNoise * variancePerChannel);
                kv.CopyTo(noisy, 0);
                Span<float> target = noisy.AsSpan(p * prefixTokens * c, prefixTokens * c);
                for (int t = 0; t < prefixTokens; t++)
                {
                    if (t % chunkTokens < exactHead)
                    {
                        continue;
                    }

                    for (int j = 0; j < c; j++)
                    {
                        target[(t * c) + j] += (float)(std * Gaussian(random));
                    }
                }

                Buffer.BlockCopy(noisy, 0, kvBytes, 0, kvBytes.Length);
                using InferenceSession session = model.CreateSession(prefixTokens + continuationTokens);
                session.Cache.Import(0, prefixTokens, DType.Float32, kvBytes);
                session.PrefillAllLogits(continuation, prefixTokens, logits);
                LogSoftmaxRows(logits, vocab);
                double kl = 0;
                for (int i = 0; i < reference.Length; i++)
                {
                    kl += Math.Exp(reference[i]) * (reference[i] - logits[i]);
                }

                sensitivity[p] += Math.Max(0, kl / continuationTokens) / relativeNoise;
            }

            measured++;
        }

        if (measured == 0)
        {
            throw new ArgumentException($"No document has the {prefixTokens + continuationTokens} tokens a sensitivity measurement needs.", nameof(documents));
        }

        double average = sensitivity.Average();
        return [.. sensitivity.Select(s => Math.Max(s, 0.05 * average) / measured)];
    }

    private static void LogSoftmaxRows(Span<float> rows, int width)
    {
        for (int start = 0; start < rows.Length; start += width)
        {
            Span<float> row = rows.Slice(start, width);
            float max = TensorPrimitives.Max(row);
            double sum = 0;
            foreach (float v in row)
            {
                sum += Math.Exp(v - max);
            }

            TensorPrimitives.Subtract(row, (float)(max + Math.Log(sum)), row);
        }
    }

    private static double Gaussian(Random random) =>
        Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());

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
