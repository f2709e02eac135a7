using System.Diagnostics;
using System.Globalization;
using System.Text;
using KvFetcher.Engine;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Restoring;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Serving;
using KvFetcher.Serving.Scheduling;
using KvFetcher.Store.Disk;
using KvFetcher.Store.Shaping;

namespace KvFetcher.Benchmarking;

/// <summary>What the serving benchmark runs.</summary>
public sealed record ServingWorkloadOptions
{
    /// <summary>Where the contexts and fresh prompts come from (their tokens are concatenated).</summary>
    public required string DocumentsDirectory { get; init; }

    /// <summary>Stored context of a reuse request (tokens, a multiple of 256); a fresh question follows it.</summary>
    public int ContextTokens { get; init; } = 3072;

    /// <summary>Distinct stored contexts the reuse requests pick from.</summary>
    public int Contexts { get; init; } = 4;

    /// <summary>New tokens after a reuse request's context (the question).</summary>
    public int QuestionTokens { get; init; } = 32;

    /// <summary>Prompt length of a request without stored context.</summary>
    public int FreshTokens { get; init; } = 384;

    /// <summary>Tokens each request generates (decode load beside the prefills).</summary>
    public int MaxTokens { get; init; } = 8;

    /// <summary>Arrival rates (requests per second, both classes together; Poisson arrivals).</summary>
    public IReadOnlyList<double> Rates { get; init; } = [1, 2];

    /// <summary>The share of arrivals that reuse a stored context.</summary>
    public double ReuseShare { get; init; } = 0.5;

    /// <summary>Link rates to the store, Gbit/s (the token-bucket shaper of the TTFT sweep).</summary>
    public IReadOnlyList<double> Gbps { get; init; } = [1, 4, 16];

    /// <summary>
    /// What runs at each point: <c>off</c> (reuse switched off: every prompt computed), <c>fetch</c> (the waiting queue),
    /// <c>cake</c>, <c>ours</c> and <c>ours-layer</c> (compute and fetch together in the engine's iterations; ours-layer
    /// also splits the meeting chunk by layers).
    /// </summary>
    public IReadOnlyList<string> Strategies { get; init; } = ["off", "fetch", "cake", "ours", "ours-layer"];

    /// <summary>Arrivals per run (the same schedule for every strategy at a rate).</summary>
    public int Requests { get; init; } = 24;

    /// <summary>The variant chunks are stored and fetched as (lossless by default).</summary>
    public KvVariant Variant { get; init; } = KvVariant.Raw;

    public int Seed { get; init; } = 17;

    /// <summary>How fetched chunks reach the engine (NVDEC on a GPU); the CPU decoders by default.</summary>
    public IChunkRestorer? Restorer { get; init; }

    public Action<string>? Log { get; init; }
}

/// <summary>One run: a strategy at one link rate and arrival rate.</summary>
public sealed record ServingWorkloadRow(
    string Strategy, double Gbps, double Rate, int ReuseCount, double ReuseMeanMs, double ReuseP99Ms, int FreshCount, double FreshMeanMs, double FreshP99Ms,
    double RequestsPerSecond, double TokensPerSecond, double FetchedShare, double MeanMeetingChunk);

public sealed record ServingWorkloadResult(IReadOnlyList<ServingWorkloadRow> Rows, string Machine, string Model, int ContextTokens, int FreshTokens, int MaxTokens, int Requests);

/// <summary>
/// The serving benchmark (issue 17): Poisson arrivals of reuse requests (a long stored context and a fresh question) and
/// of requests without stored context (fresh prompts) through one engine loop (<see cref="EngineScheduler"/>), over
/// the shaped store at several link rates, for reuse switched off, the fetch-only waiting queue, Cake in the batch and
/// ours in the batch. Every strategy at a rate replays the same arrival schedule, side by side in one run. Reports
/// mean and p99 TTFT per class, throughput, the share of stored chunks fetched and the mean meeting chunk.
/// </summary>
public static class ServingWorkload
{
    public static async Task<ServingWorkloadResult> RunAsync(IInferenceModel model, ServingWorkloadOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        int contextSpan = options.ContextTokens + options.QuestionTokens;
        int maxFresh = options.Requests * 2;
        int[] corpus = TtftSweep.Corpus(model, options.DocumentsDirectory, (options.Contexts * options.ContextTokens) + ((options.Requests + maxFresh) * Math.Max(options.QuestionTokens, options.FreshTokens)));
        int[][] contexts = [.. Enumerable.Range(0, options.Contexts).Select(c => corpus[(c * options.ContextTokens)..((c + 1) * options.ContextTokens)])];
        int freshFrom = options.Contexts * options.ContextTokens;
        string directory = Directory.CreateTempSubdirectory("kvfetch-serving-").FullName;
        var rows = new List<ServingWorkloadRow>();
        try
        {
            await using var disk = DiskKvStore.Open(new DiskKvStoreOptions { Directory = directory, Fsync = false });
            var reuseOptions = new ReuseOptions { Ladder = [options.Variant] };
            await using (var writer = new KvReuse(model, disk, reuseOptions, restorer: options.Restorer))
            {
                foreach (int[] context in contexts)
                {
                    await writer.WarmAsync([.. context, 0], cancellationToken).ConfigureAwait(false); // the context's full chunks
                }
            }

            foreach (double rate in options.Rates)
            {
                Arrival[] schedule = Schedule(options, rate, contexts, corpus, freshFrom);
                foreach (double gbps in options.Gbps)
                {
                    foreach (string strategy in options.Strategies)
                    {
                        if (strategy == "off" && gbps != options.Gbps[0])
                        {
                            continue; // the link does not matter without reuse: measured once per rate
                        }

                        await using var shaped = new ShapedKvStore(disk, BandwidthSchedule.Constant(gbps * 1e9 / 8), ownsInner: false);
                        ServingWorkloadRow row = await RunOnceAsync(model, strategy == "off" ? null : shaped, reuseOptions, options, strategy, gbps, rate, schedule, cancellationToken).ConfigureAwait(false);
                        rows.Add(row);
                        options.Log?.Invoke(string.Create(CultureInfo.InvariantCulture,
                            $"{strategy,-5} {gbps,4} Gbit/s {rate} req/s: reuse {row.ReuseMeanMs:F0}/{row.ReuseP99Ms:F0} ms, fresh {row.FreshMeanMs:F0}/{row.FreshP99Ms:F0} ms, {row.RequestsPerSecond:F2} req/s, fetched {row.FetchedShare:P0}, meet {row.MeanMeetingChunk:F1}"));
                    }
                }
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }

        return new ServingWorkloadResult(rows, Machine(), Path.GetFileName(model.Directory.TrimEnd(Path.DirectorySeparatorChar)), options.ContextTokens, options.FreshTokens, options.MaxTokens, options.Requests);
    }

    /// <summary>The result as a markdown table, with each strategy's reuse TTFT as a ratio to the waiting queue's.</summary>
    public static string Markdown(ServingWorkloadResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var text = new StringBuilder();
        text.Append("| Gbit/s | req/s | strategy | reuse TTFT mean | reuse p99 | vs fetch | fresh TTFT mean | fresh p99 | fresh p99 vs off | req/s done | tok/s | fetched | meeting chunk |\n");
        text.Append("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        foreach (ServingWorkloadRow row in result.Rows)
        {
            ServingWorkloadRow? fetch = result.Rows.FirstOrDefault(r => r.Strategy == "fetch" && r.Gbps == row.Gbps && r.Rate == row.Rate);
            ServingWorkloadRow? off = result.Rows.FirstOrDefault(r => r.Strategy == "off" && r.Rate == row.Rate);
            string vsFetch = fetch is null || row.Strategy == "off" ? "" : string.Create(CultureInfo.InvariantCulture, $"{fetch.ReuseMeanMs / row.ReuseMeanMs:F2}x");
            string vsOff = off is null ? "" : string.Create(CultureInfo.InvariantCulture, $"{row.FreshP99Ms / off.FreshP99Ms:F2}");
            string link = row.Strategy == "off" ? "-" : row.Gbps.ToString(CultureInfo.InvariantCulture);
            text.Append(CultureInfo.InvariantCulture,
                $"| {link} | {row.Rate} | {row.Strategy} | {row.ReuseMeanMs:F0} | {row.ReuseP99Ms:F0} | {vsFetch} | {row.FreshMeanMs:F0} | {row.FreshP99Ms:F0} | {vsOff} | {row.RequestsPerSecond:F2} | {row.TokensPerSecond:F1} | {(row.Strategy == "off" ? "" : row.FetchedShare.ToString("P0", CultureInfo.InvariantCulture))} | {(row.Strategy == "off" ? "" : row.MeanMeetingChunk.ToString("F1", CultureInfo.InvariantCulture))} |\n");
        }

        return text.ToString();
    }

    private static async Task<ServingWorkloadRow> RunOnceAsync(IInferenceModel model, ShapedKvStore? store, ReuseOptions reuseOptions, ServingWorkloadOptions options,
        string strategy, double gbps, double rate, Arrival[] schedule, CancellationToken cancellationToken)
    {
        await using KvReuse? reuse = store is null ? null : new KvReuse(model, store, reuseOptions, restorer: options.Restorer);
        await using var scheduler = new EngineScheduler(model, reuse, new EngineSchedulerOptions
        {
            MaxActiveSessions = 8,
            MaxQueuedRequests = 1 << 16,
            PublishAnswers = false,
            ReuseStrategy = strategy == "off" ? PrefillStrategy.Adaptive : KvFetcherOptions.ParseStrategy(strategy),
        }, new ServingMetrics());

        // Learn the rates first (a request of each class), as a server that has been running would have.
        foreach (Arrival warm in schedule[..2])
        {
            await scheduler.Submit(new GenerationRequest { Prompt = warm.Prompt, MaxTokens = 1 }, cancellationToken).Completion.ConfigureAwait(false);
        }

        var running = new List<(Arrival Arrival, Task<GenerationResult> Done)>();
        var clock = Stopwatch.StartNew();
        foreach (Arrival arrival in schedule[2..])
        {
            TimeSpan wait = arrival.At - clock.Elapsed;
            if (wait > TimeSpan.Zero)
            {
                await Task.Delay(wait, cancellationToken).ConfigureAwait(false);
            }

            running.Add((arrival, scheduler.Submit(new GenerationRequest { Prompt = arrival.Prompt, MaxTokens = options.MaxTokens }, cancellationToken).Completion));
        }

        GenerationResult[] results = await Task.WhenAll(running.Select(r => r.Done)).ConfigureAwait(false);
        double seconds = clock.Elapsed.TotalSeconds;
        double[] reuseMs = [.. results.Where((_, i) => running[i].Arrival.Reuse).Select(r => r.Prefill.TimeToFirstToken.TotalMilliseconds).Order()];
        double[] freshMs = [.. results.Where((_, i) => !running[i].Arrival.Reuse).Select(r => r.Prefill.TimeToFirstToken.TotalMilliseconds).Order()];
        ReuseSplit[] splits = [.. results.Select(r => r.Prefill.Reuse).Where((s, i) => running[i].Arrival.Reuse && s is { StoredChunks: > 0 }).Select(s => s!)];
        double fetched = splits.Length == 0 ? 0 : (double)splits.Sum(s => s.FetchedChunks) / splits.Sum(s => s.StoredChunks);
        double meeting = splits.Length == 0 ? 0 : splits.Average(s => s.MeetingChunk);
        return new ServingWorkloadRow(strategy, gbps, rate, reuseMs.Length, Mean(reuseMs), Percentile(reuseMs, 0.99), freshMs.Length, Mean(freshMs), Percentile(freshMs, 0.99),
            results.Length / seconds, results.Sum(r => r.CompletionTokens) / seconds, fetched, meeting);
    }

    /// <summary>Poisson arrivals at <paramref name="rate"/>: each a reuse request (a stored context and a fresh question) with the reuse share's probability, else a fresh prompt.</summary>
    private static Arrival[] Schedule(ServingWorkloadOptions options, double rate, int[][] contexts, int[] corpus, int freshFrom)
    {
        var random = new Random(options.Seed);
        var arrivals = new Arrival[options.Requests + 2];
        TimeSpan at = TimeSpan.Zero;
        int offset = freshFrom;
        for (int i = 0; i < arrivals.Length; i++)
        {
            // Two warm-up requests first (one per class), then the measured schedule.
            bool reuse = i switch { 0 => true, 1 => false, _ => random.NextDouble() < options.ReuseShare };
            int length = reuse ? options.QuestionTokens : options.FreshTokens;
            int[] fresh = corpus[offset..(offset + length)];
            offset += length;
            int[] prompt = reuse ? [.. contexts[random.Next(contexts.Length)], .. fresh] : fresh;
            if (i >= 2)
            {
                at += TimeSpan.FromSeconds(-Math.Log(1 - random.NextDouble()) / rate);
            }

            arrivals[i] = new Arrival(at, reuse, prompt);
        }

        return arrivals;
    }

    private static double Mean(double[] values) => values.Length == 0 ? 0 : values.Average();

    private static double Percentile(double[] sorted, double p) => sorted.Length == 0 ? 0 : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)];

    private static string Machine() => $"{Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}";

    private sealed record Arrival(TimeSpan At, bool Reuse, int[] Prompt);
}
