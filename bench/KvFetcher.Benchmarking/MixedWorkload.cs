using KvFetcher.Engine;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Restoring;
using KvFetcher.Serving;
using KvFetcher.Serving.Scheduling;
using KvFetcher.Store.Disk;
using KvFetcher.Store.Shaping;

namespace KvFetcher.Benchmarking;

/// <summary>What the mixed-workload benchmark runs.</summary>
public sealed record MixedWorkloadOptions
{
    public required string DocumentsDirectory { get; init; }

    /// <summary>Stored context of each reuse request (tokens), plus a 16-token question.</summary>
    public int ReuseContext { get; init; } = 3840;

    /// <summary>Prompt length of the background requests (no reuse).</summary>
    public int BackgroundTokens { get; init; } = 256;

    public TimeSpan BackgroundInterval { get; init; } = TimeSpan.FromMilliseconds(250);

    public TimeSpan ReuseInterval { get; init; } = TimeSpan.FromSeconds(2);

    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The link to the store.</summary>
    public double Mbps { get; init; } = 100;

    /// <summary>How fetched chunks reach the engine; the CPU decoders by default.</summary>
    public IChunkRestorer? Restorer { get; init; }

    public Action<string>? Log { get; init; }
}

/// <summary>Latency percentiles of one request class under one scheduler design.</summary>
public sealed record MixedWorkloadRow(string Queueing, string Requests, int Count, double P50Ms, double P99Ms, double MeanMs);

/// <summary>
/// Requests without reuse arrive at a steady rate (background load) while requests reusing a long stored context
/// arrive now and then; the same arrival schedule runs twice through the serving engine loop (<see cref="EngineScheduler"/>,
/// whose waiting queue fetches a stored prefix with <see cref="KvReuse.FetchPrefixAsync(IInferenceSession, ContextPlan, IReadOnlyList{KvVariant}, CancellationToken)"/>):
/// with one session, so requests are served one at a time in arrival order and a reuse request's fetch holds everyone
/// behind it (one FIFO queue), and with several, so reuse requests wait for their KV in the waiting queue beside the
/// requests being computed (KVFetcher's separate waiting queue). Reports TTFT percentiles per class (first token only).
/// </summary>
public static class MixedWorkload
{
    /// <summary>Sessions of the separate-waiting-queue design (the serving default).</summary>
    private const int Sessions = 8;

    public static async Task<IReadOnlyList<MixedWorkloadRow>> RunAsync(IInferenceModel model, MixedWorkloadOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        int[] corpus = TtftSweep.Corpus(model, options.DocumentsDirectory, options.ReuseContext + 16 + (64 * options.BackgroundTokens));
        int[] reusePrompt = corpus[..(options.ReuseContext + 16)];
        string directory = Directory.CreateTempSubdirectory("kvfetch-mixed-").FullName;
        var rows = new List<MixedWorkloadRow>();
        try
        {
            await using var disk = DiskKvStore.Open(new DiskKvStoreOptions { Directory = directory, Fsync = false });
            var reuseOptions = new ReuseOptions { Ladder = [KvVariant.Raw] };
            await using (var writer = new KvReuse(model, disk, reuseOptions, restorer: options.Restorer))
            {
                await writer.WarmAsync(reusePrompt, cancellationToken).ConfigureAwait(false);
            }

            await using var shaped = new ShapedKvStore(disk, BandwidthSchedule.Constant(options.Mbps * 1e6 / 8), ownsInner: false);
            foreach (bool separate in new[] { false, true })
            {
                await using var reuse = new KvReuse(model, shaped, reuseOptions, restorer: options.Restorer);
                await using var scheduler = new EngineScheduler(model, reuse, new EngineSchedulerOptions
                {
                    MaxActiveSessions = separate ? Sessions : 1,
                    MaxQueuedRequests = 1 << 16,
                    PublishAnswers = false,
                }, new ServingMetrics());
                var background = new List<Task<GenerationResult>>();
                var reusing = new List<Task<GenerationResult>>();
                var start = DateTime.UtcNow;
                TimeSpan nextBackground = TimeSpan.Zero, nextReuse = TimeSpan.FromMilliseconds(100);
                int n = 0;
                while (DateTime.UtcNow - start < options.Duration)
                {
                    TimeSpan now = DateTime.UtcNow - start;
                    if (now >= nextBackground)
                    {
                        int offset = options.ReuseContext + 16 + (n++ % 64 * options.BackgroundTokens);
                        background.Add(Submit(scheduler, corpus[offset..(offset + options.BackgroundTokens)], cancellationToken));
                        nextBackground += options.BackgroundInterval;
                    }

                    if (now >= nextReuse)
                    {
                        reusing.Add(Submit(scheduler, reusePrompt, cancellationToken));
                        nextReuse += options.ReuseInterval;
                    }

                    await Task.Delay(5, cancellationToken).ConfigureAwait(false);
                }

                string queueing = separate ? "separate waiting queue" : "single FIFO queue";
                rows.Add(Row(queueing, "no reuse (background)", await Task.WhenAll(background).ConfigureAwait(false)));
                rows.Add(Row(queueing, $"reuse ({options.ReuseContext} tokens at {options.Mbps} Mbit/s)", await Task.WhenAll(reusing).ConfigureAwait(false)));
                options.Log?.Invoke($"{queueing}: {rows[^2]}; {rows[^1]}");
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }

        return rows;
    }

    /// <summary>One request for its first token only.</summary>
    private static Task<GenerationResult> Submit(EngineScheduler scheduler, int[] prompt, CancellationToken cancellationToken) =>
        scheduler.Submit(new GenerationRequest { Prompt = prompt, MaxTokens = 1 }, cancellationToken).Completion;

    private static MixedWorkloadRow Row(string queueing, string requests, GenerationResult[] results)
    {
        double[] ms = [.. results.Select(r => r.Prefill.TimeToFirstToken.TotalMilliseconds).Order()];
        return new MixedWorkloadRow(queueing, requests, ms.Length, Percentile(ms, 0.5), Percentile(ms, 0.99), ms.Average());
    }

    private static double Percentile(double[] sorted, double p) => sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)];
}
