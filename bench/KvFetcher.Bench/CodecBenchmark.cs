using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using KvFetcher.Codecs;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Engine;
using KvFetcher.Engine.Cpu;

namespace KvFetcher.Bench;

/// <summary>
/// <c>kvfetch-bench codecs</c>: every codec and level on real KV of the bundled model over the held-out documents
/// (data/heldout): compression ratio vs fp16 (whole containers), single-thread encode/decode MB/s, and for lossy
/// levels the accuracy with reconstructed KV: greedy 64-token match rate and perplexity change of a continuation.
/// </summary>
internal static class CodecBenchmark
{
    private const int ChunkTokens = 256;
    private const int GreedyTokens = 64;

    public static int Run(string[] args)
    {
        string model = BenchArgs.Option(args, "--model") ?? BenchArgs.BundledModel();
        string documents = BenchArgs.Option(args, "--documents") ?? Path.Combine(BenchArgs.RepositoryRoot(), "data", "heldout");
        int prefix = int.Parse(BenchArgs.Option(args, "--prefix") ?? "2048", CultureInfo.InvariantCulture);
        int continuation = int.Parse(BenchArgs.Option(args, "--continuation") ?? "256", CultureInfo.InvariantCulture);
        int maxDocuments = int.Parse(BenchArgs.Option(args, "--max-documents") ?? "20", CultureInfo.InvariantCulture);
        string? jsonPath = BenchArgs.Option(args, "--json");
        string[]? only = BenchArgs.Option(args, "--codecs")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        IKvCodec[] codecs = only is null ? [.. KvCodecs.All] : [.. only.Select(KvCodecs.Get)];
        if (prefix % ChunkTokens != 0)
        {
            throw new ArgumentException($"--prefix must be a multiple of {ChunkTokens}.");
        }

        using LanguageModel lm = LanguageModel.Open(model, new LanguageModelOptions { KvStorageDType = DType.Float16 });
        var results = new Dictionary<string, Row>();
        int used = 0;
        foreach (string path in Directory.GetFiles(documents, "*.txt").Order(StringComparer.Ordinal))
        {
            int[] ids = lm.Tokenizer.Encode(File.ReadAllText(path));
            if (ids.Length < prefix + continuation || used == maxDocuments)
            {
                continue;
            }

            used++;
            Console.Error.WriteLine($"[{used}] {Path.GetFileName(path)}: {ids.Length} tokens");
            RunDocument(lm, codecs, ids.AsSpan(0, prefix + continuation).ToArray(), prefix, results);
        }

        Console.WriteLine($"kvf-pydoc-16m KV (fp16) of {used} held-out documents, {prefix}-token prefixes in {ChunkTokens}-token chunks; " +
            $"accuracy: greedy {GreedyTokens} tokens and perplexity of the next {continuation} tokens, reconstructed vs exact KV; 1 thread.");
        Console.WriteLine($"{"codec",-10} {"level",5} {"ratio",7} {"enc MB/s",9} {"dec MB/s",9} {"greedy match",13} {"ppl change",11}");
        foreach ((string name, Row row) in results)
        {
            Console.WriteLine($"{name.Split('/')[0],-10} {name.Split('/')[1],5} {row.Ratio,7:F2} {row.EncodeMBps,9:F0} {row.DecodeMBps,9:F0} {row.TokenMatch,12:P1} {row.PerplexityChange,10:P2}");
        }

        if (jsonPath is not null)
        {
            File.WriteAllText(jsonPath, JsonSerializer.Serialize(results.ToDictionary(r => r.Key, r => r.Value.ToDictionary()), BenchJson.Default.DictionaryStringDictionaryStringDouble));
        }

        return 0;
    }

    private static void RunDocument(LanguageModel lm, IKvCodec[] codecs, int[] ids, int prefix, Dictionary<string, Row> results)
    {
        int vocab = lm.Config.VocabSize;
        int total = ids.Length;
        InferenceSession exact = lm.CreateSession(total + GreedyTokens);
        exact.Prefill(ids.AsSpan(0, prefix), 0, new float[vocab]);
        (double exactNll, int[] exactGreedy) = Score(lm, exact, ids, prefix);

        var shape = new KvShape(lm.Config.NumLayers, ChunkTokens, lm.Config.NumKvHeads, lm.Config.HeadDim);
        long chunkBytes = shape.Elements * 2;
        var kv = new byte[chunkBytes];
        var decoded = new byte[chunkBytes];
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        foreach (IKvCodec codec in codecs)
        {
            foreach (int level in codec.Levels)
            {
                InferenceSession restored = lm.CreateSession(total + GreedyTokens);
                long stored = 0;
                double encodeSeconds = 0, decodeSeconds = 0;
                for (int start = 0; start < prefix; start += ChunkTokens)
                {
                    exact.Cache.Export(start, start + ChunkTokens, DType.Float16, kv);
                    parameters.ResetWrittenCount();
                    payload.ResetWrittenCount();
                    long t0 = Stopwatch.GetTimestamp();
                    codec.Encode(kv, shape, DType.Float16, level, parameters, payload);
                    long t1 = Stopwatch.GetTimestamp();
                    codec.Decode(parameters.WrittenSpan, payload.WrittenSpan, shape, DType.Float16, level, decoded);
                    long t2 = Stopwatch.GetTimestamp();
                    encodeSeconds += Stopwatch.GetElapsedTime(t0, t1).TotalSeconds;
                    decodeSeconds += Stopwatch.GetElapsedTime(t1, t2).TotalSeconds;
                    stored += ChunkContainer.GetSize(parameters.WrittenCount, payload.WrittenCount);
                    restored.Cache.Import(start, start + ChunkTokens, DType.Float16, decoded);
                }

                (double nll, int[] greedy) = Score(lm, restored, ids, prefix);
                string name = $"{codec.Name}/{level}";
                Row row = results.TryGetValue(name, out Row? existing) ? existing : results[name] = new Row();
                long raw = chunkBytes * (prefix / ChunkTokens);
                row.Add(raw, stored, encodeSeconds, decodeSeconds, greedy.Zip(exactGreedy).Count(p => p.First == p.Second) / (double)GreedyTokens, Math.Exp(nll) / Math.Exp(exactNll) - 1);
            }
        }
    }

    /// <summary>Mean NLL of the continuation after the cached prefix, and the greedy tokens after it.</summary>
    private static (double Nll, int[] Greedy) Score(LanguageModel lm, InferenceSession session, int[] ids, int prefix)
    {
        int vocab = lm.Config.VocabSize;
        int n = ids.Length - prefix;
        var logits = new float[n * vocab];
        session.PrefillAllLogits(ids.AsSpan(prefix), prefix, logits);
        double nll = 0;
        for (int i = 0; i < n - 1; i++)
        {
            ReadOnlySpan<float> row = logits.AsSpan(i * vocab, vocab);
            float max = System.Numerics.Tensors.TensorPrimitives.Max(row);
            double sum = 0;
            foreach (float v in row)
            {
                sum += Math.Exp(v - max);
            }

            nll -= row[ids[prefix + i + 1]] - max - Math.Log(sum);
        }

        // Greedy from the prefix plus the first 16 continuation tokens (already computed above: truncate to them).
        session.Cache.Truncate(prefix + 16);
        var last = new float[vocab];
        session.Prefill(ids.AsSpan(prefix + 15, 1), prefix + 15, last);
        var greedy = new int[GreedyTokens];
        for (int i = 0; i < GreedyTokens; i++)
        {
            greedy[i] = Kernels.ArgMax(last);
            session.Decode(greedy[i], prefix + 16 + i, last);
        }

        return (nll / (n - 1), greedy);
    }

    private sealed class Row
    {
        private long _raw, _stored;
        private double _encode, _decode, _match, _ppl;
        private int _count;

        public double Ratio => (double)_raw / _stored;

        public double EncodeMBps => _raw / 1e6 / _encode;

        public double DecodeMBps => _raw / 1e6 / _decode;

        public double TokenMatch => _match / _count;

        public double PerplexityChange => _ppl / _count;

        public void Add(long raw, long stored, double encode, double decode, double match, double ppl)
        {
            _raw += raw;
            _stored += stored;
            _encode += encode;
            _decode += decode;
            _match += match;
            _ppl += ppl;
            _count++;
        }

        public Dictionary<string, double> ToDictionary() => new()
        {
            ["ratio_vs_fp16"] = Ratio,
            ["encode_mb_per_s"] = EncodeMBps,
            ["decode_mb_per_s"] = DecodeMBps,
            ["greedy_token_match"] = TokenMatch,
            ["perplexity_change"] = PerplexityChange,
            ["documents"] = _count,
        };
    }
}
