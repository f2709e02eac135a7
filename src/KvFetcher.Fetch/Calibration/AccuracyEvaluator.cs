using System.Buffers;
using System.Diagnostics;
using System.Numerics.Tensors;
using KvFetcher.Codecs;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Engine;

namespace KvFetcher.Fetch.Calibration;

/// <summary>How <see cref="AccuracyEvaluator"/> measures: the prefix that is restored, the continuation that is scored.</summary>
public sealed record AccuracyEvaluationOptions
{
    /// <summary>Tokens of each document whose KV is encoded, decoded and restored (a multiple of <see cref="ChunkTokens"/>).</summary>
    public int PrefixTokens { get; init; } = 1024;

    /// <summary>Tokens after the prefix scored teacher-forced (each position's prediction of the next token).</summary>
    public int ContinuationTokens { get; init; } = 256;

    /// <summary>Tokens generated greedily after the prefix and the continuation's first token, compared position by position.</summary>
    public int GreedyTokens { get; init; } = 32;

    /// <summary>Tokens per chunk, as chunks are stored (the codecs see the prefix one chunk at a time).</summary>
    public int ChunkTokens { get; init; } = 256;

    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(ChunkTokens, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(PrefixTokens, ChunkTokens);
        if (PrefixTokens % ChunkTokens != 0)
        {
            throw new ArgumentException($"The prefix ({PrefixTokens} tokens) must be a whole number of {ChunkTokens}-token chunks.", nameof(PrefixTokens));
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(ContinuationTokens, 2);
        ArgumentOutOfRangeException.ThrowIfNegative(GreedyTokens);
    }
}

/// <summary>
/// One variant's accuracy and cost, measured by <see cref="AccuracyEvaluator"/> over a set of documents.
/// </summary>
/// <param name="Variant">The variant, e.g. <c>video8</c>.</param>
/// <param name="RatioVsFp16">fp16 bytes of the prefix KV over the bytes of its containers.</param>
/// <param name="Top1Agreement">Share of continuation positions whose most likely next token is the one with the exact KV.</param>
/// <param name="PerplexityChange">Perplexity of the continuation with the restored KV over the one with the exact KV, minus 1 (pooled over all scored tokens).</param>
/// <param name="GreedyMatch">Share of greedy tokens equal, position by position, to the ones generated with the exact KV.</param>
/// <param name="EncodeMBps">MB of KV (in the cache's dtype) encoded per second, one thread.</param>
/// <param name="DecodeMBps">MB of KV decoded per second, one thread.</param>
/// <param name="Documents">Documents measured.</param>
/// <param name="ScoredTokens">Continuation positions scored.</param>
public sealed record VariantAccuracy(KvVariant Variant, double RatioVsFp16, double Top1Agreement, double PerplexityChange, double GreedyMatch,
    double EncodeMBps, double DecodeMBps, int Documents, long ScoredTokens);

/// <summary>
/// Accuracy of reuse measured the standard way, the one definition every benchmark and the calibration use: for each
/// document, the KV of a prefix is computed, each variant encodes and decodes it chunk by chunk, and the decoded KV is
/// restored into a fresh cache; the continuation is then scored teacher-forced against the same continuation over the
/// exact KV: top-1 agreement of the next-token predictions and the change in perplexity, and, as an extra, how many of
/// the tokens generated greedily from there match. A lossless variant scores 100% and 0 change by construction (the
/// restored KV is bit-identical). Runs on the CPU engine (it needs every position's logits).
/// </summary>
public sealed class AccuracyEvaluator
{
    private readonly LanguageModel _model;
    private readonly AccuracyEvaluationOptions _options;

    public AccuracyEvaluator(LanguageModel model, AccuracyEvaluationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new AccuracyEvaluationOptions();
        options.Validate();
        _model = model;
        _options = options;
    }

    public AccuracyEvaluationOptions Options => _options;

    /// <summary>Tokens a document needs to be measured.</summary>
    public int TokensNeeded => _options.PrefixTokens + _options.ContinuationTokens;

    /// <summary>
    /// Measures every variant of <paramref name="variants"/> over <paramref name="documents"/> (token ids, each at least
    /// <see cref="TokensNeeded"/> long; only that many are read). <paramref name="progress"/> hears each document's index
    /// when it is done, with the results over the documents so far.
    /// </summary>
    public IReadOnlyList<VariantAccuracy> Evaluate(IReadOnlyList<int[]> documents, IReadOnlyList<KvVariant> variants,
        Action<int, IReadOnlyList<VariantAccuracy>>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(documents);
        ArgumentNullException.ThrowIfNull(variants);
        if (documents.Count == 0)
        {
            throw new ArgumentException("Accuracy needs at least one document.", nameof(documents));
        }

        var totals = new Totals[variants.Count];
        for (int v = 0; v < totals.Length; v++)
        {
            totals[v] = new Totals();
        }

        for (int d = 0; d < documents.Count; d++)
        {
            int[] ids = documents[d];
            if (ids.Length < TokensNeeded)
            {
                throw new ArgumentException($"Document {d} has {ids.Length} tokens; the evaluation needs {TokensNeeded}.", nameof(documents));
            }

            EvaluateDocument(ids.AsSpan(0, TokensNeeded).ToArray(), variants, totals);
            progress?.Invoke(d, [.. variants.Select((v, i) => totals[i].ToResult(v, d + 1))]);
        }

        return [.. variants.Select((v, i) => totals[i].ToResult(v, documents.Count))];
    }

    private void EvaluateDocument(int[] ids, IReadOnlyList<KvVariant> variants, Totals[] totals)
    {
        int prefix = _options.PrefixTokens;
        int chunkTokens = _options.ChunkTokens;
        int capacity = ids.Length + _options.GreedyTokens + 1;
        DType dtype = _model.KvStorageDType;
        using InferenceSession exact = _model.CreateSession(capacity);
        var last = new float[_model.Config.VocabSize];
        exact.Prefill(ids.AsSpan(0, prefix), 0, last);
        Score reference = ScoreContinuation(exact, ids, null);

        var shape = new KvShape(_model.Config.NumLayers, chunkTokens, _model.Config.NumKvHeads, _model.Config.HeadDim);
        int chunkBytes = checked((int)(shape.Elements * dtype.SizeOf()));
        byte[] kv = ArrayPool<byte>.Shared.Rent(chunkBytes);
        byte[] decoded = ArrayPool<byte>.Shared.Rent(chunkBytes);
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        try
        {
            for (int v = 0; v < variants.Count; v++)
            {
                KvVariant variant = variants[v];
                IKvCodec codec = variant.GetCodec();
                using InferenceSession restored = _model.CreateSession(capacity);
                long stored = 0;
                double encodeSeconds = 0, decodeSeconds = 0;
                for (int start = 0; start < prefix; start += chunkTokens)
                {
                    Span<byte> chunk = kv.AsSpan(0, chunkBytes);
                    Span<byte> output = decoded.AsSpan(0, chunkBytes);
                    exact.Cache.Export(start, start + chunkTokens, dtype, chunk);
                    parameters.ResetWrittenCount();
                    payload.ResetWrittenCount();
                    long t0 = Stopwatch.GetTimestamp();
                    codec.Encode(chunk, shape, dtype, start, variant.Level, parameters, payload);
                    long t1 = Stopwatch.GetTimestamp();
                    codec.Decode(parameters.WrittenSpan, payload.WrittenSpan, shape, dtype, start, variant.Level, output);
                    long t2 = Stopwatch.GetTimestamp();
                    encodeSeconds += Stopwatch.GetElapsedTime(t0, t1).TotalSeconds;
                    decodeSeconds += Stopwatch.GetElapsedTime(t1, t2).TotalSeconds;
                    stored += ChunkContainer.GetSize(parameters.WrittenCount, payload.WrittenCount);
                    restored.Cache.Import(start, start + chunkTokens, dtype, output);
                }

                Score score = ScoreContinuation(restored, ids, reference);
                long kvBytes = (long)chunkBytes * (prefix / chunkTokens);
                long fp16Bytes = shape.Elements * 2 * (prefix / chunkTokens);
                totals[v].Add(fp16Bytes, kvBytes, stored, encodeSeconds, decodeSeconds, score, reference);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(kv);
            ArrayPool<byte>.Shared.Return(decoded);
        }
    }

    /// <summary>
    /// Scores the continuation over <paramref name="session"/>'s prefix: per position the most likely next token and
    /// the NLL of the true one; then the greedy tokens after the continuation's first token. With
    /// <paramref name="reference"/>, also counts agreements with it.
    /// </summary>
    private Score ScoreContinuation(InferenceSession session, int[] ids, Score? reference)
    {
        int prefix = _options.PrefixTokens;
        int n = _options.ContinuationTokens;
        int vocab = _model.Config.VocabSize;
        float[] logits = ArrayPool<float>.Shared.Rent(n * vocab);
        try
        {
            session.PrefillAllLogits(ids.AsSpan(prefix, n), prefix, logits.AsSpan(0, n * vocab));

            // Row i predicts token prefix + i + 1: rows [0, n - 1) have a true next token to score.
            var top = new int[n - 1];
            double nll = 0;
            for (int i = 0; i < n - 1; i++)
            {
                ReadOnlySpan<float> row = logits.AsSpan(i * vocab, vocab);
                top[i] = TensorPrimitives.IndexOfMax(row);
                nll += LogSumExp(row) - row[ids[prefix + i + 1]];
            }

            // Greedy from the continuation's first token: its logits are row 0.
            var greedy = new int[_options.GreedyTokens];
            if (greedy.Length > 0)
            {
                session.Cache.Truncate(prefix + 1);
                var next = logits.AsSpan(0, vocab).ToArray();
                for (int i = 0; i < greedy.Length; i++)
                {
                    greedy[i] = TensorPrimitives.IndexOfMax(next);
                    if (i + 1 < greedy.Length)
                    {
                        session.Decode(greedy[i], prefix + 1 + i, next);
                    }
                }
            }

            return new Score(top, nll, greedy);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(logits);
        }
    }

    private static double LogSumExp(ReadOnlySpan<float> row)
    {
        float max = TensorPrimitives.Max(row);
        double sum = 0;
        foreach (float v in row)
        {
            sum += Math.Exp(v - max);
        }

        return max + Math.Log(sum);
    }

    private sealed record Score(int[] Top, double Nll, int[] Greedy);

    private sealed class Totals
    {
        private long _fp16, _kv, _stored, _scored, _agree, _greedy, _greedyMatch;
        private double _encode, _decode, _nll, _referenceNll;

        public void Add(long fp16Bytes, long kvBytes, long stored, double encodeSeconds, double decodeSeconds, Score score, Score reference)
        {
            _fp16 += fp16Bytes;
            _kv += kvBytes;
            _stored += stored;
            _encode += encodeSeconds;
            _decode += decodeSeconds;
            _scored += score.Top.Length;
            _agree += score.Top.Zip(reference.Top).Count(p => p.First == p.Second);
            _nll += score.Nll;
            _referenceNll += reference.Nll;
            _greedy += score.Greedy.Length;
            _greedyMatch += score.Greedy.Zip(reference.Greedy).Count(p => p.First == p.Second);
        }

        public VariantAccuracy ToResult(KvVariant variant, int documents) => new(
            variant,
            RatioVsFp16: (double)_fp16 / _stored,
            Top1Agreement: (double)_agree / _scored,
            PerplexityChange: _nll == _referenceNll ? 0 : Math.Exp((_nll - _referenceNll) / _scored) - 1,
            GreedyMatch: _greedy == 0 ? 1 : (double)_greedyMatch / _greedy,
            EncodeMBps: _kv / 1e6 / Math.Max(_encode, 1e-9),
            DecodeMBps: _kv / 1e6 / Math.Max(_decode, 1e-9),
            documents,
            _scored);
    }
}
