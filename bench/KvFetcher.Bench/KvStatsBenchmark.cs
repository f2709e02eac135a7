using System.Globalization;
using System.Numerics.Tensors;
using System.Text;
using System.Text.Json.Nodes;
using KvFetcher.Core;
using KvFetcher.Engine;
using KvFetcher.Engine.Cpu;
using KvFetcher.Engine.Model;
using KvFetcher.Fetch.Calibration;

namespace KvFetcher.Bench;

/// <summary>
/// <c>kvfetch-bench kv-stats</c>: what a model's KV looks like, per layer, K and V apart, over held-out documents (prose
/// and code): the per-channel 8-bit order-0 entropy and the entropy of token-to-token deltas (what a lossless coder of
/// quantized KV can exploit), outlier channels (per-channel absolute maximum over the median channel's), keys before and
/// after RoPE (through the engine's <see cref="IAttentionProbe"/>), the 4-bit quantization error with per-channel groups
/// (KIVI's choice for keys) and per-token groups (its choice for values), attention sinks (the share of attention on
/// token 0 and on the first 4 tokens), and each layer's sensitivity: the perplexity change of the continuation when only
/// that layer's K and V are quantized to 8 or 4 bits (per channel, min/max per 256-token chunk, as the video codec does).
/// </summary>
internal static class KvStatsBenchmark
{
    public const string Usage =
        """
        usage: kvfetch-bench kv-stats [--model DIR] [--documents DIR|FILE,...] [--max-documents 8] [--prefix 1024]
                                      [--continuation 256] [--sensitivity-documents 4] [--json FILE] [--markdown FILE]
        Per layer, K and V apart, over held-out documents (default: data/heldout and data/heldout-code, taken in turn):
        8-bit order-0 and delta entropy, outlier channels, keys before/after RoPE, 4-bit error per-channel vs per-token,
        attention sinks, and the perplexity change when one layer's KV is quantized to 8 or 4 bits.
        """;

    private const int ChunkTokens = 256;
    private const double OutlierFactor = 6;
    private const int SinkQueryStride = 4;
    private const int SinkFirstQuery = 16;

    public static int Run(string[] args)
    {
        string model = BenchArgs.Option(args, "--model") ?? BenchArgs.BundledModel();
        IReadOnlyList<string> sources = BenchArgs.Option(args, "--documents")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            ?? EvaluationDocuments.FindHeldOut(BenchArgs.RepositoryRoot());
        int maxDocuments = Int(args, "--max-documents", 8);
        int prefix = Int(args, "--prefix", 1024);
        int continuation = Int(args, "--continuation", 256);
        int sensitivityDocuments = Int(args, "--sensitivity-documents", 4);
        if (prefix % ChunkTokens != 0 || prefix < ChunkTokens)
        {
            throw new ArgumentException($"--prefix must be a positive multiple of {ChunkTokens}.");
        }

        using LanguageModel lm = LanguageModel.Open(model, new LanguageModelOptions { KvStorageDType = DType.Float32 });
        IReadOnlyList<EvaluationDocument> docs = EvaluationDocuments.Load(lm.Tokenizer, sources, prefix + continuation, maxDocuments);
        if (docs.Count == 0)
        {
            throw new ArgumentException($"No document in {string.Join(", ", sources)} has {prefix + continuation} tokens.");
        }

        ModelConfig c = lm.Config;
        var layers = new LayerStats[c.NumLayers];
        for (int l = 0; l < layers.Length; l++)
        {
            layers[l] = new LayerStats(c.NumKvHeads * c.HeadDim);
        }

        for (int d = 0; d < docs.Count; d++)
        {
            Console.Error.WriteLine($"[{d + 1}/{docs.Count}] {Path.GetFileName(docs[d].Path)}");
            MeasureDocument(lm, docs[d].Tokens, prefix, continuation, layers, sensitivity: d < sensitivityDocuments);
        }

        string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(model));
        string header = $"{name}: {c.NumLayers} layers, {c.NumKvHeads} KV heads x {c.HeadDim}, {docs.Count} documents ({Sources(docs)}), " +
            $"{prefix}-token prefixes; sensitivity over {Math.Min(sensitivityDocuments, docs.Count)} documents, {continuation}-token continuations.";
        string markdown = Markdown(header, layers);
        Console.WriteLine(markdown);
        if (BenchArgs.Option(args, "--markdown") is { } markdownPath)
        {
            File.WriteAllText(markdownPath, markdown);
        }

        if (BenchArgs.Option(args, "--json") is { } jsonPath)
        {
            File.WriteAllText(jsonPath, Json(name, c, docs, prefix, continuation, sensitivityDocuments, layers).ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        }

        return 0;
    }

    private static void MeasureDocument(LanguageModel lm, int[] ids, int prefix, int continuation, LayerStats[] layers, bool sensitivity)
    {
        ModelConfig c = lm.Config;
        int channels = c.NumKvHeads * c.HeadDim;
        var probe = new Capture(c, prefix);
        using InferenceSession session = lm.CreateSession(prefix + continuation);
        session.Probe = probe;
        session.Prefill(ids.AsSpan(0, prefix), 0, new float[c.VocabSize]);
        session.Probe = null;

        // The cache's KV (fp32 storage: exactly what attention used), [layer][K, V][token][kvHead][headDim].
        var kv = new byte[session.Cache.GetExportByteCount(prefix, DType.Float32)];
        session.Cache.Export(0, prefix, DType.Float32, kv);
        float[] all = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(kv).ToArray();
        int block = prefix * channels;
        for (int l = 0; l < layers.Length; l++)
        {
            ReadOnlySpan<float> keys = all.AsSpan(((2 * l) + 0) * block, block);
            ReadOnlySpan<float> values = all.AsSpan(((2 * l) + 1) * block, block);
            layers[l].Keys.Add(keys, prefix, c.NumKvHeads, c.HeadDim);
            layers[l].PreRopeKeys.Add(probe.PreRopeKeys[l], prefix, c.NumKvHeads, c.HeadDim);
            layers[l].Values.Add(values, prefix, c.NumKvHeads, c.HeadDim);
            layers[l].AddSinks(probe.Queries[l], keys, prefix, c, c.UsesSlidingWindow(l) ? c.SlidingWindow : null);
        }

        if (!sensitivity)
        {
            return;
        }

        double reference = ContinuationNll(lm, all, ids, prefix, continuation);
        foreach (int bits in (int[])[8, 4])
        {
            for (int l = 0; l < layers.Length; l++)
            {
                float[] copy = (float[])all.Clone();
                QuantizePerChannel(copy.AsSpan(((2 * l) + 0) * block, block), prefix, channels, bits);
                QuantizePerChannel(copy.AsSpan(((2 * l) + 1) * block, block), prefix, channels, bits);
                double nll = ContinuationNll(lm, copy, ids, prefix, continuation);
                layers[l].AddSensitivity(bits, nll - reference, continuation - 1);
            }
        }
    }

    /// <summary>Summed NLL of the continuation's tokens after a prefix whose KV is <paramref name="kv"/> (fp32, wire layout).</summary>
    private static double ContinuationNll(LanguageModel lm, float[] kv, int[] ids, int prefix, int continuation)
    {
        int vocab = lm.Config.VocabSize;
        using InferenceSession session = lm.CreateSession(prefix + continuation);
        session.Cache.Import(0, prefix, DType.Float32, System.Runtime.InteropServices.MemoryMarshal.AsBytes(kv.AsSpan()));
        var logits = new float[continuation * vocab];
        session.PrefillAllLogits(ids.AsSpan(prefix, continuation), prefix, logits);
        double nll = 0;
        for (int i = 0; i < continuation - 1; i++)
        {
            ReadOnlySpan<float> row = logits.AsSpan(i * vocab, vocab);
            float max = TensorPrimitives.Max(row);
            double sum = 0;
            foreach (float v in row)
            {
                sum += Math.Exp(v - max);
            }

            nll += max + Math.Log(sum) - row[ids[prefix + i + 1]];
        }

        return nll;
    }

    /// <summary>Quantizes [tokens, channels] in place to <paramref name="bits"/> per channel, min/max per 256-token chunk (the video codec's scheme).</summary>
    private static void QuantizePerChannel(Span<float> x, int tokens, int channels, int bits)
    {
        int levels = (1 << bits) - 1;
        for (int start = 0; start < tokens; start += ChunkTokens)
        {
            int end = Math.Min(tokens, start + ChunkTokens);
            for (int ch = 0; ch < channels; ch++)
            {
                float min = float.MaxValue, max = float.MinValue;
                for (int t = start; t < end; t++)
                {
                    float v = x[(t * channels) + ch];
                    min = Math.Min(min, v);
                    max = Math.Max(max, v);
                }

                float step = (max - min) / levels;
                for (int t = start; t < end; t++)
                {
                    ref float v = ref x[(t * channels) + ch];
                    v = step > 0 ? min + (MathF.Round((v - min) / step) * step) : min;
                }
            }
        }
    }

    private static int Int(string[] args, string name, int fallback) =>
        int.Parse(BenchArgs.Option(args, name) ?? fallback.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);

    private static string Sources(IReadOnlyList<EvaluationDocument> docs) =>
        string.Join(", ", docs.GroupBy(d => Path.GetFileName(Path.GetDirectoryName(d.Path)!)).Select(g => $"{g.Count()} from {g.Key}"));

    private static string Markdown(string header, LayerStats[] layers)
    {
        var text = new StringBuilder();
        text.AppendLine(header).AppendLine();
        text.AppendLine("Entropy (bits per 8-bit value, per channel, min/max per 256-token chunk) and outlier channels (per-channel abs max / median channel's; channels above 6x):").AppendLine();
        text.AppendLine("| layer | K entropy | K delta entropy | V entropy | V delta entropy | K pre-RoPE max/median | K pre-RoPE outliers | K post-RoPE max/median | K post-RoPE outliers | V max/median | V outliers |");
        text.AppendLine("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for (int l = 0; l < layers.Length; l++)
        {
            LayerStats s = layers[l];
            text.AppendLine(Invariant($"| {l} | {s.Keys.Entropy():F2} | {s.Keys.DeltaEntropy():F2} | {s.Values.Entropy():F2} | {s.Values.DeltaEntropy():F2} | {s.PreRopeKeys.OutlierRatio:F1} | {s.PreRopeKeys.OutlierChannels:F1} | {s.Keys.OutlierRatio:F1} | {s.Keys.OutlierChannels:F1} | {s.Values.OutlierRatio:F1} | {s.Values.OutlierChannels:F1} |"));
        }

        text.AppendLine().AppendLine("4-bit quantization error (squared error / squared norm) with per-channel groups (256 tokens) vs per-token groups (one head's channels), attention sinks, and the perplexity change when only this layer's K and V are quantized per channel:").AppendLine();
        text.AppendLine("| layer | K per-channel | K per-token | K pre-RoPE per-channel | V per-channel | V per-token | attention on token 0 | on tokens 0-3 | ppl change, 8-bit | ppl change, 4-bit |");
        text.AppendLine("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for (int l = 0; l < layers.Length; l++)
        {
            LayerStats s = layers[l];
            text.AppendLine(Invariant($"| {l} | {s.Keys.ChannelError:F4} | {s.Keys.TokenError:F4} | {s.PreRopeKeys.ChannelError:F4} | {s.Values.ChannelError:F4} | {s.Values.TokenError:F4} | {100 * s.SinkToken0:F1}% | {100 * s.SinkFirst4:F1}% | {100 * s.PerplexityChange(8):+0.000;-0.000;0.000}% | {100 * s.PerplexityChange(4):+0.000;-0.000;0.000}% |"));
        }

        return text.ToString();
    }

    private static JsonObject Json(string name, ModelConfig c, IReadOnlyList<EvaluationDocument> docs, int prefix, int continuation, int sensitivityDocuments, LayerStats[] layers)
    {
        var array = new JsonArray();
        for (int l = 0; l < layers.Length; l++)
        {
            LayerStats s = layers[l];
            array.Add(new JsonObject
            {
                ["layer"] = l,
                ["k"] = s.Keys.ToJson(),
                ["k_pre_rope"] = s.PreRopeKeys.ToJson(),
                ["v"] = s.Values.ToJson(),
                ["attention_on_token0"] = s.SinkToken0,
                ["attention_on_first4"] = s.SinkFirst4,
                ["ppl_change_layer_kv_8bit"] = s.PerplexityChange(8),
                ["ppl_change_layer_kv_4bit"] = s.PerplexityChange(4),
            });
        }

        return new JsonObject
        {
            ["model"] = name,
            ["layers"] = c.NumLayers,
            ["kv_heads"] = c.NumKvHeads,
            ["head_dim"] = c.HeadDim,
            ["documents"] = new JsonArray([.. docs.Select(d => (JsonNode)JsonValue.Create(Path.GetFileName(d.Path)))]),
            ["prefix_tokens"] = prefix,
            ["continuation_tokens"] = continuation,
            ["sensitivity_documents"] = Math.Min(sensitivityDocuments, docs.Count),
            ["outlier_factor"] = OutlierFactor,
            ["per_layer"] = array,
        };
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    /// <summary>Keeps each layer's pre-RoPE keys and post-RoPE queries of positions [0, prefix).</summary>
    private sealed class Capture(ModelConfig c, int prefix) : IAttentionProbe
    {
        private readonly int _qWidth = c.NumHeads * c.HeadDim;
        private readonly int _kWidth = c.NumKvHeads * c.HeadDim;

        public float[][] PreRopeKeys { get; } = [.. Enumerable.Range(0, c.NumLayers).Select(_ => new float[prefix * c.NumKvHeads * c.HeadDim])];

        public float[][] Queries { get; } = [.. Enumerable.Range(0, c.NumLayers).Select(_ => new float[prefix * c.NumHeads * c.HeadDim])];

        public void Observe(int layer, int start, int count, ReadOnlySpan<float> queries, ReadOnlySpan<float> keys, bool rotated)
        {
            int n = Math.Min(count, prefix - start);
            if (n <= 0)
            {
                return;
            }

            if (rotated)
            {
                queries[..(n * _qWidth)].CopyTo(Queries[layer].AsSpan(start * _qWidth));
            }
            else
            {
                keys[..(n * _kWidth)].CopyTo(PreRopeKeys[layer].AsSpan(start * _kWidth));
            }
        }
    }

    private sealed class LayerStats(int channels)
    {
        private readonly double[] _nll = new double[9];
        private readonly long[] _scored = new long[9];
        private double _sink0, _sink4;
        private long _sinkRows;

        public TensorStats Keys { get; } = new(channels);

        public TensorStats PreRopeKeys { get; } = new(channels);

        public TensorStats Values { get; } = new(channels);

        public double SinkToken0 => _sink0 / _sinkRows;

        public double SinkFirst4 => _sink4 / _sinkRows;

        public double PerplexityChange(int bits) => _scored[bits] == 0 ? double.NaN : Math.Exp(_nll[bits] / _scored[bits]) - 1;

        public void AddSensitivity(int bits, double nllChange, int scored)
        {
            _nll[bits] += nllChange;
            _scored[bits] += scored;
        }

        /// <summary>Attention weights of sampled queries (every 4th from position 16) of every head over the causal keys.</summary>
        public void AddSinks(ReadOnlySpan<float> queries, ReadOnlySpan<float> keys, int tokens, ModelConfig c, int? window)
        {
            int hd = c.HeadDim;
            int group = c.NumHeads / c.NumKvHeads;
            int qWidth = c.NumHeads * hd, kWidth = c.NumKvHeads * hd;
            float scale = 1f / MathF.Sqrt(hd);
            var scores = new float[tokens];
            for (int p = SinkFirstQuery; p < tokens; p += SinkQueryStride)
            {
                int lo = window is { } w ? Math.Max(0, p - w + 1) : 0;
                for (int h = 0; h < c.NumHeads; h++)
                {
                    ReadOnlySpan<float> q = queries.Slice((p * qWidth) + (h * hd), hd);
                    int kvHead = h / group;
                    int count = p - lo + 1;
                    for (int j = 0; j < count; j++)
                    {
                        scores[j] = TensorPrimitives.Dot(q, keys.Slice(((lo + j) * kWidth) + (kvHead * hd), hd)) * scale;
                    }

                    Span<float> row = scores.AsSpan(0, count);
                    TensorPrimitives.SoftMax(row, row);
                    _sink0 += lo == 0 ? row[0] : 0;
                    _sink4 += lo == 0 ? TensorPrimitives.Sum(row[..Math.Min(4, count)]) : 0;
                    _sinkRows++;
                }
            }
        }
    }

    /// <summary>One tensor's statistics (K, pre-RoPE K or V of one layer), accumulated over documents.</summary>
    private sealed class TensorStats(int channels)
    {
        private readonly long[] _histogram = new long[channels * 256];
        private readonly long[] _deltas = new long[channels * 256];
        private double _ratio, _outliers, _channelError, _tokenError;
        private int _documents;

        public double OutlierRatio => _ratio / _documents;

        public double OutlierChannels => _outliers / _documents;

        public double ChannelError => _channelError / _documents;

        public double TokenError => _tokenError / _documents;

        public double Entropy() => MeanEntropy(_histogram);

        public double DeltaEntropy() => MeanEntropy(_deltas);

        /// <summary>Adds one document's [tokens, kvHeads * headDim] values.</summary>
        public void Add(ReadOnlySpan<float> x, int tokens, int kvHeads, int headDim)
        {
            var q = new byte[tokens];
            var absMax = new float[channels];
            double squared = 0, channelError = 0, tokenError = 0;
            for (int ch = 0; ch < channels; ch++)
            {
                for (int start = 0; start < tokens; start += ChunkTokens)
                {
                    int end = Math.Min(tokens, start + ChunkTokens);
                    float min = float.MaxValue, max = float.MinValue;
                    for (int t = start; t < end; t++)
                    {
                        float v = x[(t * channels) + ch];
                        (min, max) = (Math.Min(min, v), Math.Max(max, v));
                        absMax[ch] = Math.Max(absMax[ch], Math.Abs(v));
                        squared += (double)v * v;
                    }

                    float step8 = (max - min) / 255, step4 = (max - min) / 15;
                    for (int t = start; t < end; t++)
                    {
                        float v = x[(t * channels) + ch];
                        q[t] = step8 > 0 ? (byte)MathF.Round((v - min) / step8) : (byte)0;
                        _histogram[(ch * 256) + q[t]]++;
                        if (t > start)
                        {
                            _deltas[(ch * 256) + (byte)(q[t] - q[t - 1])]++;
                        }

                        float e = step4 > 0 ? v - (min + (MathF.Round((v - min) / step4) * step4)) : v - min;
                        channelError += (double)e * e;
                    }
                }
            }

            // Per-token groups: each token's channels of one KV head, min/max over them.
            for (int t = 0; t < tokens; t++)
            {
                for (int h = 0; h < kvHeads; h++)
                {
                    ReadOnlySpan<float> group = x.Slice((t * channels) + (h * headDim), headDim);
                    float min = TensorPrimitives.Min(group), max = TensorPrimitives.Max(group);
                    float step = (max - min) / 15;
                    foreach (float v in group)
                    {
                        float e = step > 0 ? v - (min + (MathF.Round((v - min) / step) * step)) : v - min;
                        tokenError += (double)e * e;
                    }
                }
            }

            float[] sorted = [.. absMax.Order()];
            float median = sorted[sorted.Length / 2];
            _ratio += sorted[^1] / Math.Max(median, 1e-12f);
            _outliers += absMax.Count(a => a > OutlierFactor * median);
            _channelError += channelError / squared;
            _tokenError += tokenError / squared;
            _documents++;
        }

        public JsonObject ToJson() => new()
        {
            ["entropy_bits"] = Entropy(),
            ["delta_entropy_bits"] = DeltaEntropy(),
            ["absmax_over_median"] = OutlierRatio,
            ["outlier_channels"] = OutlierChannels,
            ["error_4bit_per_channel"] = ChannelError,
            ["error_4bit_per_token"] = TokenError,
        };

        private double MeanEntropy(long[] histogram)
        {
            double total = 0;
            for (int ch = 0; ch < channels; ch++)
            {
                ReadOnlySpan<long> counts = histogram.AsSpan(ch * 256, 256);
                long n = 0;
                foreach (long count in counts)
                {
                    n += count;
                }

                double bits = 0;
                foreach (long count in counts)
                {
                    if (count > 0)
                    {
                        double p = (double)count / n;
                        bits -= p * Math.Log2(p);
                    }
                }

                total += bits;
            }

            return total / channels;
        }
    }
}
