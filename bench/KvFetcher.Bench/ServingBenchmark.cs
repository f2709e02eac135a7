using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using KvFetcher.Server;
using KvFetcher.Serving;

namespace KvFetcher.Bench;

/// <summary>
/// <c>kvfetch-bench serving</c>: N concurrent clients replay a document-QA workload (each request: one of D held-out
/// documents as the system message and one of Q questions) against serve-llm over real HTTP, once with reuse off and
/// once with reuse on (a fresh <c>kvfetch serve</c> store on loopback, shared by every instance), side by side in one
/// run. Reports client-side TTFT p50/p99 (to the response headers, which the server sends with the first token),
/// throughput and the reuse hit rate.
/// </summary>
internal static class ServingBenchmark
{
    public const string Usage =
        """
        usage: kvfetch-bench serving [--clients 4] [--documents 4] [--questions 6] [--prefix-tokens 1024]
                                     [--max-tokens 16] [--instances 1] [--rounds 3] [--model DIR] [--json FILE]
        Modes alternate (off, on, off, on, ...) for --rounds rounds, each with a fresh store and fresh servers, so load
        from elsewhere on the machine falls on both alike; the percentiles pool every round's requests.
        """;

    private static readonly string[] s_questions =
    [
        "What is this document about?",
        "Summarise the first section.",
        "Which commands or functions are mentioned?",
        "What should a reader do first?",
        "What is the main warning here?",
        "Explain the key term in one sentence.",
        "Who is this text written for?",
        "What comes after the example?",
    ];

    public static int Run(string[] args)
    {
        int clients = Int(args, "--clients", 4);
        int documents = Int(args, "--documents", 4);
        int questions = Int(args, "--questions", 6);
        int prefixTokens = Int(args, "--prefix-tokens", 1024);
        int maxTokens = Int(args, "--max-tokens", 16);
        int instances = Int(args, "--instances", 1);
        int rounds = Int(args, "--rounds", 3);
        string model = BenchArgs.Option(args, "--model") ?? BenchArgs.BundledModel();
        string json = BenchArgs.Option(args, "--json") ?? Path.Combine(BenchArgs.RepositoryRoot(), "docs", "results", "serving.json");
        if (questions > s_questions.Length)
        {
            throw new ArgumentException($"--questions is at most {s_questions.Length}.");
        }

        // Documents cut to about --prefix-tokens tokens (3.4 bytes a token on this model's training text), plus one to warm up.
        string[] texts = [.. Directory.GetFiles(Path.Combine(BenchArgs.RepositoryRoot(), "data", "heldout"), "*.txt").Order(StringComparer.Ordinal)
            .Select(File.ReadAllText).Where(t => t.Length > prefixTokens * 4).Take(documents + 1).Select(t => t[..(int)(prefixTokens * 3.4)])];
        if (texts.Length < documents + 1)
        {
            throw new ArgumentException($"Only {texts.Length - 1} held-out documents are long enough for --prefix-tokens {prefixTokens}.");
        }

        // The replay order: every (document, question) pair once, shuffled with a fixed seed.
        var random = new Random(7);
        (int Document, int Question)[] workload = [.. Enumerable.Range(0, documents).SelectMany(d => Enumerable.Range(0, questions).Select(q => (d + 1, q)))];
        random.Shuffle(workload);

        var results = new Dictionary<string, Dictionary<string, double>>
        {
            ["config"] = new()
            {
                ["clients"] = clients,
                ["documents"] = documents,
                ["questions"] = questions,
                ["requests"] = workload.Length,
                ["prefix_tokens"] = prefixTokens,
                ["max_tokens"] = maxTokens,
                ["instances"] = instances,
                ["rounds"] = rounds,
                ["threads"] = Environment.ProcessorCount,
            },
        };
        var runs = new Dictionary<bool, List<ModeRun>> { [false] = [], [true] = [] };
        for (int round = 0; round < rounds; round++)
        {
            foreach (bool reuse in (bool[])[false, true])
            {
                ModeRun run = RunModeAsync(reuse, model, texts, workload, clients, maxTokens, instances).GetAwaiter().GetResult();
                runs[reuse].Add(run);
                Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"round {round + 1} reuse {(reuse ? "on " : "off")}: {run.Seconds:0.0} s, TTFT mean {run.Samples.Average(x => x.TtftMs):0} ms"));
            }
        }

        foreach (bool reuse in (bool[])[false, true])
        {
            results[reuse ? "reuse-on" : "reuse-off"] = Summarise(runs[reuse]);
        }

        Console.WriteLine($"serving: {rounds} rounds of {workload.Length} requests per mode ({documents} documents x {questions} questions, ~{prefixTokens}-token prefixes, {maxTokens} new tokens), "
            + $"{clients} clients, {instances} instance(s), {Environment.ProcessorCount} cores");
        Console.WriteLine("| mode | TTFT p50 | TTFT p99 | TTFT mean | mean queue / fetch / prefill | requests/s | new tokens/s | hit rate | prompt tokens reused |");
        Console.WriteLine("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        foreach (string mode in (string[])["reuse-off", "reuse-on"])
        {
            Dictionary<string, double> r = results[mode];
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {mode} | {r["ttft_p50_ms"]:0} ms | {r["ttft_p99_ms"]:0} ms | {r["ttft_mean_ms"]:0} ms | {r["queue_mean_ms"]:0} / {r["fetch_mean_ms"]:0} / {r["prefill_mean_ms"]:0} ms | {r["requests_per_s"]:0.00} | {r["generated_tokens_per_s"]:0.0} | {r["hit_rate"]:P0} | {r["reused_token_fraction"]:P0} |"));
        }

        Dictionary<string, double> off = results["reuse-off"], on = results["reuse-on"];
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"reuse on vs off: TTFT p50 {off["ttft_p50_ms"] / on["ttft_p50_ms"]:0.00}x lower, p99 {off["ttft_p99_ms"] / on["ttft_p99_ms"]:0.00}x lower, throughput {on["requests_per_s"] / off["requests_per_s"]:0.00}x"));
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(json))!);
        File.WriteAllText(json, JsonSerializer.Serialize(results, BenchJson.Default.DictionaryStringDictionaryStringDouble));
        Console.WriteLine($"wrote {json}");
        return 0;
    }

    private static async Task<ModeRun> RunModeAsync(bool reuse, string model, string[] texts, (int Document, int Question)[] workload,
        int clients, int maxTokens, int instanceCount)
    {
        string data = Path.Combine(Path.GetTempPath(), "kvf-bench-serving-" + Guid.NewGuid().ToString("N"));
        const string Token = "bench-serving-token-0123456789";
        StoreServer? store = reuse
            ? await StoreServer.StartAsync(new StoreServerOptions { DataDirectory = data, Token = Token, Urls = ["http://127.0.0.1:0"] })
            : null;
        var servers = new List<LlmServer>();
        try
        {
            for (int i = 0; i < instanceCount; i++)
            {
                servers.Add(await LlmServer.StartAsync(new LlmServerOptions
                {
                    Engine = new KvFetcherOptions
                    {
                        ModelDirectory = model,
                        Store = store?.Addresses[0].ToString(),
                        StoreToken = Token,
                        Reuse = reuse,
                        MaxActiveSessions = Math.Max(8, clients),
                    },
                    Urls = ["http://127.0.0.1:0"],
                }));
            }

            HttpClient[] http = [.. servers.Select(s => new HttpClient { BaseAddress = s.Addresses[0], Timeout = TimeSpan.FromMinutes(10) })];
            // Warm-up on a document the workload does not use (JIT, first allocations), then the measured replay.
            foreach (HttpClient client in http)
            {
                _ = await SendAsync(client, texts[0], s_questions[0], maxTokens);
            }

            // Counters from here on: the warm-up requests are not part of the measurement.
            (long Lookups, long Hits, long Prompt, long Reused, long Bytes, long Fallbacks) before = Counters(servers);
            int next = -1;
            var samples = new Sample[workload.Length];
            long start = Stopwatch.GetTimestamp();
            Task[] runners = [.. Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
            {
                int i;
                while ((i = Interlocked.Increment(ref next)) < workload.Length)
                {
                    (int document, int question) = workload[i];
                    samples[i] = await SendAsync(http[i % http.Length], texts[document], s_questions[question], maxTokens);
                }
            }))];
            await Task.WhenAll(runners);
            double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            foreach (HttpClient client in http)
            {
                client.Dispose();
            }

            (long Lookups, long Hits, long Prompt, long Reused, long Bytes, long Fallbacks) after = Counters(servers);
            return new ModeRun(samples, seconds, after.Lookups - before.Lookups, after.Hits - before.Hits, after.Prompt - before.Prompt,
                after.Reused - before.Reused, after.Bytes - before.Bytes, after.Fallbacks - before.Fallbacks);
        }
        finally
        {
            foreach (LlmServer server in servers)
            {
                await server.DisposeAsync();
            }

            if (store is not null)
            {
                await store.DisposeAsync();
                Directory.Delete(data, recursive: true);
            }
        }
    }

    private sealed record ModeRun(Sample[] Samples, double Seconds, long Lookups, long Hits, long PromptTokens, long ReusedTokens, long BytesFetched, long FallbackChunks);

    private static Dictionary<string, double> Summarise(List<ModeRun> runs)
    {
        Sample[] samples = [.. runs.SelectMany(r => r.Samples)];
        double[] ttft = [.. samples.Select(s => s.TtftMs).Order()];
        double seconds = runs.Sum(r => r.Seconds);
        long lookups = runs.Sum(r => r.Lookups), hits = runs.Sum(r => r.Hits), prompt = runs.Sum(r => r.PromptTokens), reused = runs.Sum(r => r.ReusedTokens);
        return new Dictionary<string, double>
        {
            ["requests"] = samples.Length,
            ["ttft_p50_ms"] = Percentile(ttft, 0.50),
            ["ttft_p99_ms"] = Percentile(ttft, 0.99),
            ["ttft_mean_ms"] = ttft.Average(),
            ["server_ttft_mean_ms"] = samples.Average(s => s.ServerTtftMs),
            ["queue_mean_ms"] = samples.Average(s => s.QueueMs),
            ["fetch_mean_ms"] = samples.Average(s => s.FetchMs),
            ["prefill_mean_ms"] = samples.Average(s => s.PrefillMs),
            ["hit_ttft_mean_ms"] = samples.Where(s => s.ReusedTokens > 0).Select(s => s.TtftMs).DefaultIfEmpty(0).Average(),
            ["miss_ttft_mean_ms"] = samples.Where(s => s.ReusedTokens == 0).Select(s => s.TtftMs).DefaultIfEmpty(0).Average(),
            ["requests_per_s"] = samples.Length / seconds,
            ["generated_tokens_per_s"] = samples.Sum(s => s.CompletionTokens) / seconds,
            ["wall_s"] = seconds,
            ["hit_rate"] = lookups == 0 ? 0 : (double)hits / lookups,
            ["lookups"] = lookups,
            ["hits"] = hits,
            ["reused_token_fraction"] = prompt == 0 ? 0 : (double)reused / prompt,
            ["bytes_fetched"] = runs.Sum(r => r.BytesFetched),
            ["fallback_chunks"] = runs.Sum(r => r.FallbackChunks),
        };
    }

    private static (long Lookups, long Hits, long Prompt, long Reused, long Bytes, long Fallbacks) Counters(List<LlmServer> servers) =>
        (servers.Sum(s => s.Engine.Metrics.Lookups), servers.Sum(s => s.Engine.Metrics.Hits), servers.Sum(s => s.Engine.Metrics.PromptTokens),
            servers.Sum(s => s.Engine.Metrics.ReusedTokens), servers.Sum(s => s.Engine.Metrics.BytesFetched), servers.Sum(s => s.Engine.Metrics.FallbackChunks));

    private readonly record struct Sample(double TtftMs, double ServerTtftMs, int CompletionTokens, double QueueMs, double FetchMs, double PrefillMs, int ReusedTokens);

    /// <summary>One streaming chat request; TTFT is measured to the response headers (sent with the first token).</summary>
    private static async Task<Sample> SendAsync(HttpClient client, string document, string question, int maxTokens)
    {
        var body = new JsonObject
        {
            ["model"] = "kvf-code-32l",
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "system", ["content"] = document }, new JsonObject { ["role"] = "user", ["content"] = question }),
            ["max_tokens"] = maxTokens,
            ["temperature"] = 0,
            ["stream"] = true,
            ["stream_options"] = new JsonObject { ["include_usage"] = true },
        };
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions") { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        long start = Stopwatch.GetTimestamp();
        using HttpResponseMessage response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        double ttft = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        response.EnsureSuccessStatusCode();
        double serverTtft = double.Parse(response.Headers.GetValues("X-KvFetcher-TTFT-Ms").Single(), CultureInfo.InvariantCulture);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.StartsWith("data: {", StringComparison.Ordinal) && line.Contains("\"usage\":{", StringComparison.Ordinal))
            {
                JsonElement usage = JsonDocument.Parse(line[6..]).RootElement.GetProperty("usage");
                JsonElement parts = usage.GetProperty("kvfetcher");
                return new Sample(ttft, serverTtft, usage.GetProperty("completion_tokens").GetInt32(), parts.GetProperty("queue_ms").GetDouble(),
                    parts.GetProperty("fetch_ms").GetDouble(), parts.GetProperty("prefill_ms").GetDouble(), parts.GetProperty("reused_tokens").GetInt32());
            }
        }

        throw new InvalidOperationException("The stream ended without a usage chunk.");
    }

    private static double Percentile(double[] sorted, double p) => sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];

    private static int Int(string[] args, string name, int fallback)
    {
        string? text = BenchArgs.Option(args, name);
        if (text is null)
        {
            return fallback;
        }

        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int value) && value > 0
            ? value
            : throw new ArgumentException($"{name} must be a positive integer; got '{text}'.");
    }
}
