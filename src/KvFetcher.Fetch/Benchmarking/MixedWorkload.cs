using KvFetcher.Engine;
using KvFetcher.Fetch.Restoring;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Store.Disk;
using KvFetcher.Store.Shaping;

namespace KvFetcher.Fetch.Benchmarking;

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
/// arrive now and then; the same arrival schedule runs against one FIFO queue (the engine fetches inline) and against
/// KVFetcher's separate waiting queue. Reports TTFT percentiles per class.
/// </summary>
public static class MixedWorkload
{
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
                await using var scheduler = new RequestScheduler(model, reuse, new RequestSchedulerOptions { SeparateWaitingQueue = separate, Variant = KvVariant.Raw });
                var background = new List<Task<RequestResult>>();
                var reusing = new List<Task<RequestResult>>();
                var start = DateTime.UtcNow;
                TimeSpan nextBackground = TimeSpan.Zero, nextReuse = TimeSpan.FromMilliseconds(100);
                int n = 0;
                while (DateTime.UtcNow - start < options.Duration)
                {
                    TimeSpan now = DateTime.UtcNow - start;
                    if (now >= nextBackground)
                    {
                        int offset = options.ReuseContext + 16 + (n++ % 64 * options.BackgroundTokens);
                        background.Add(scheduler.SubmitAsync(corpus[offset..(offset + options.BackgroundTokens)], reuse: false, cancellationToken));
                        nextBackground += options.BackgroundInterval;
                    }

                    if (now >= nextReuse)
                    {
                        reusing.Add(scheduler.SubmitAsync(reusePrompt, reuse: true, cancellationToken));
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

    private static MixedWorkloadRow Row(string queueing, string requests, RequestResult[] results)
    {
        double[] ms = [.. results.Select(r => r.TimeToFirstToken.TotalMilliseconds).Order()];
        return new MixedWorkloadRow(queueing, requests, ms.Length, Percentile(ms, 0.5), Percentile(ms, 0.99), ms.Average());
    }

    private static double Percentile(double[] sorted, double p) => sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)];
}
