using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using KvFetcher.Engine;
using KvFetcher.Engine.Cpu;

namespace KvFetcher.Bench;

/// <summary>
/// <c>kvfetch-bench engine</c>: prefill and decode throughput of the bundled model on the CPU at several context
/// lengths (real text from the bundled documentation fixtures), median of repeated runs.
/// </summary>
internal static class EngineBenchmark
{
    public static int Run(string[] args)
    {
        string model = BenchArgs.Option(args, "--model") ?? BenchArgs.BundledModel();
        int[] lengths = (BenchArgs.Option(args, "--lengths") ?? "512,2048,4096").Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        int repeats = int.Parse(BenchArgs.Option(args, "--repeats") ?? "3", CultureInfo.InvariantCulture);
        int decodeTokens = int.Parse(BenchArgs.Option(args, "--decode-tokens") ?? "64", CultureInfo.InvariantCulture);
        string? jsonPath = BenchArgs.Option(args, "--json");

        using LanguageModel lm = LanguageModel.Open(model);
        int[] text = LoadText(lm, lengths.Max());
        Console.WriteLine($"model {Path.GetFileName(lm.Directory)}, {lm.Threads} threads, {Environment.ProcessorCount} processors, {repeats} runs each (median)");
        Console.WriteLine($"{"tokens",8} {"prefill tok/s",14} {"prefill s",10} {"decode tok/s",13}");
        var results = new List<Dictionary<string, object>>();
        var logits = new float[lm.Config.VocabSize];
        foreach (int length in lengths)
        {
            var prefill = new List<double>();
            var decode = new List<double>();
            for (int r = 0; r < repeats + 1; r++)
            {
                InferenceSession session = lm.CreateSession(length + decodeTokens);
                long t0 = Stopwatch.GetTimestamp();
                session.Prefill(text.AsSpan(0, length), 0, logits);
                double prefillSeconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
                long t1 = Stopwatch.GetTimestamp();
                for (int i = 0; i < decodeTokens; i++)
                {
                    session.Decode(Kernels.ArgMax(logits), length + i, logits);
                }

                double decodeSeconds = Stopwatch.GetElapsedTime(t1).TotalSeconds;
                if (r > 0)
                {
                    prefill.Add(prefillSeconds);
                    decode.Add(decodeSeconds);
                }
            }

            double p = Median(prefill);
            double d = Median(decode);
            Console.WriteLine($"{length,8} {length / p,14:F0} {p,10:F3} {decodeTokens / d,13:F1}");
            results.Add(new()
            {
                ["tokens"] = length,
                ["prefill_seconds"] = p,
                ["prefill_tokens_per_second"] = length / p,
                ["decode_tokens_per_second"] = decodeTokens / d,
            });
        }

        if (jsonPath is not null)
        {
            using FileStream stream = File.Create(jsonPath);
            using var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            writer.WriteStartObject();
            writer.WriteString("model", Path.GetFileName(lm.Directory));
            writer.WriteNumber("threads", lm.Threads);
            writer.WriteStartArray("results");
            foreach (Dictionary<string, object> row in results)
            {
                writer.WriteStartObject();
                foreach ((string key, object value) in row)
                {
                    writer.WriteNumber(key, Convert.ToDouble(value, CultureInfo.InvariantCulture));
                }

                writer.WriteEndObject();
            }

            writer.WriteEndArray();
            writer.WriteEndObject();
        }

        return 0;
    }

    /// <summary>Real text: the bundled fixture prompts, tokenized and repeated to the longest length asked for.</summary>
    private static int[] LoadText(LanguageModel lm, int length)
    {
        string fixture = Path.Combine(Path.GetDirectoryName(lm.Directory)!, "..", "tests", "TestData", "fixtures", Path.GetFileName(lm.Directory), "fixture.json");
        using JsonDocument json = JsonDocument.Parse(File.ReadAllText(fixture));
        var tokens = new List<int>();
        while (tokens.Count < length)
        {
            foreach (JsonElement prompt in json.RootElement.GetProperty("prompts").EnumerateArray())
            {
                tokens.AddRange(lm.Tokenizer.Encode(prompt.GetProperty("text").GetString()!, addSpecial: tokens.Count == 0));
            }
        }

        return tokens.ToArray();
    }

    private static double Median(List<double> values)
    {
        values.Sort();
        return values[values.Count / 2];
    }
}
