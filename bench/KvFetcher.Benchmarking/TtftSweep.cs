using System.Diagnostics;
using KvFetcher.Engine;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Fetching;
using KvFetcher.Fetch.Restoring;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Store;
using KvFetcher.Store.Disk;
using KvFetcher.Store.Shaping;

namespace KvFetcher.Benchmarking;

/// <summary>What the TTFT sweep runs.</summary>
public sealed record TtftSweepOptions
{
    /// <summary>Stored context lengths in tokens (multiples of the chunk size); the prompt adds <see cref="SuffixTokens"/>.</summary>
    public IReadOnlyList<int> Contexts { get; init; } = [2048, 3840];

    public IReadOnlyList<double> BandwidthsMbps { get; init; } = [10, 50, 100, 500, 1000, 10000];

    public IReadOnlyList<string> Strategies { get; init; } = ["compute", "fetch-raw", "fetch-cachegen0", "fetch-video8", "cake-raw", "ours"];

    /// <summary>The variants stored per chunk (the adaptive strategy picks among them).</summary>
    public IReadOnlyList<KvVariant> Ladder { get; init; } = [KvVariant.Raw, KvVariant.Exact, KvVariant.Parse("cachegen0"), KvVariant.Parse("video8"), KvVariant.Parse("video4")];

    /// <summary>New tokens after the stored context (the question).</summary>
    public int SuffixTokens { get; init; } = 16;

    /// <summary>Runs per point; the median is reported.</summary>
    public int Repeats { get; init; } = 1;

    /// <summary>
    /// Runs the strategies of a point in rounds (each round every strategy once, in a rotating order) instead of each
    /// strategy's repeats back to back, so a load that changes over time falls on every strategy alike.
    /// </summary>
    public bool Interleave { get; init; }

    /// <summary>A jitter profile (a <see cref="BandwidthSchedule"/>) run on the longest context; null to skip.</summary>
    public string? Jitter { get; init; } = "200Mbps@500ms,20Mbps@500ms";

    /// <summary>Where the documents come from (their tokens are concatenated); or see <see cref="Tokens"/>.</summary>
    public string? DocumentsDirectory { get; init; }

    /// <summary>The prompt tokens of a given length, instead of <see cref="DocumentsDirectory"/> (e.g. for a model without a tokenizer).</summary>
    public Func<int, int[]>? Tokens { get; init; }

    /// <summary>
    /// How a context's chunks get into the store before the points run; the default computes them on the engine and
    /// stores every ladder variant (<see cref="KvReuse.WarmAsync"/>).
    /// </summary>
    public Func<KvReuse, int[], CancellationToken, Task>? Warm { get; init; }

    /// <summary>Fetcher settings (workers, deadlines, memory); the ladder comes from <see cref="Ladder"/>.</summary>
    public ReuseOptions Reuse { get; init; } = new();

    /// <summary>
    /// An external store to run against (e.g. a <c>kvfetch serve</c> URL across a real shaped link) instead of a temporary
    /// disk store; with <see cref="RealLinkMbps"/> the token-bucket shaper is off and the link's own rate is reported.
    /// </summary>
    public string? Store { get; init; }

    /// <summary>The real link's rate (netns + tc) when <see cref="Store"/> sits behind one; the shaper is not used.</summary>
    public double? RealLinkMbps { get; init; }

    /// <summary>How fetched chunks reach the engine (e.g. NVDEC on a GPU); the CPU decoders by default.</summary>
    public IChunkRestorer? Restorer { get; init; }

    /// <summary>Progress lines.</summary>
    public Action<string>? Log { get; init; }
}

/// <summary>One measured point.</summary>
public sealed record TtftPoint(int Context, string Link, double Mbps, string Strategy, double TtftMs, int Restored, int Failed, long BytesFetched, string Variants);

/// <summary>The TTFT lower bound at one point and the rates it was computed from.</summary>
public sealed record TtftBound(int Context, double Mbps, double BoundMs, int SplitChunk, string Variant);

public sealed record TtftSweepResult(IReadOnlyList<TtftPoint> Points, IReadOnlyList<TtftBound> Bounds, IReadOnlyDictionary<int, double[]> ComputeMsPerChunk, string Machine);

/// <summary>
/// The TTFT benchmark: for each stored context, every strategy at every bandwidth (a token-bucket shaper in the store's
/// transfer path over the embedded disk store), plus the lower bound from DESIGN.md computed from rates measured in the
/// same run: min over split points k of max(compute of chunks [0, k), pipelined fetch+decode of chunks [k, N)) plus the
/// suffix, with each variant's measured size and decode time.
/// </summary>
public static class TtftSweep
{
    public static async Task<TtftSweepResult> RunAsync(IInferenceModel model, TtftSweepOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        var points = new List<TtftPoint>();
        var bounds = new List<TtftBound>();
        var computeMs = new Dictionary<int, double[]>();
        int length = options.Contexts.Max() + options.SuffixTokens;
        int[] corpus = options.Tokens?.Invoke(length)
            ?? Corpus(model, options.DocumentsDirectory ?? throw new ArgumentException("The sweep needs documents or a token source.", nameof(options)), length);
        ReuseOptions reuseOptions = options.Reuse with { Ladder = options.Ladder };
        string directory = Directory.CreateTempSubdirectory("kvfetch-ttft-").FullName;
        try
        {
            foreach (int context in options.Contexts)
            {
                int[] tokens = corpus[..(context + options.SuffixTokens)];
                await using IKvStore disk = options.Store is null
                    ? DiskKvStore.Open(new DiskKvStoreOptions { Directory = Path.Combine(directory, context.ToString(System.Globalization.CultureInfo.InvariantCulture)), Fsync = false })
                    : await KvStores.OpenAsync(options.Store, cancellationToken: cancellationToken).ConfigureAwait(false);
                var rates = new FetchRates();

                // Store the context (every ladder variant) and calibrate compute per chunk.
                await using (var writer = new KvReuse(model, disk, reuseOptions, rates, options.Restorer))
                {
                    if (options.Warm is { } warm)
                    {
                        await warm(writer, tokens, cancellationToken).ConfigureAwait(false);
                        await writer.Publisher.WhenIdleAsync().ConfigureAwait(false);
                    }
                    else
                    {
                        await writer.WarmAsync(tokens, cancellationToken).ConfigureAwait(false);
                    }
                }

                double[] chunkMs = Calibrate(model, tokens, reuseOptions.ChunkTokens, context / reuseOptions.ChunkTokens, rates, out double suffixMs);
                computeMs[context] = chunkMs;
                options.Log?.Invoke($"context {context}: stored; compute {chunkMs.Sum():F0} ms in {chunkMs.Length} chunks + suffix {suffixMs:F0} ms");

                double computeOnly = await MedianAsync(model, disk, reuseOptions, rates, options.Restorer, tokens, PrefillStrategy.ComputeOnly, options.Repeats, cancellationToken).ConfigureAwait(false) is var c ? c.TtftMs : 0;
                foreach (double mbps in options.RealLinkMbps is { } link ? [link] : options.BandwidthsMbps)
                {
                    var schedule = BandwidthSchedule.Constant(mbps * 1e6 / 8);
                    await using ShapedKvStore? shaper = options.RealLinkMbps is null ? new ShapedKvStore(disk, schedule, ownsInner: false) : null;
                    IKvStore shaped = shaper ?? disk;

                    // One adaptive request first: the estimator learns this link (a serving engine has seen earlier requests).
                    await MedianAsync(model, shaped, reuseOptions, rates, options.Restorer, tokens, PrefillStrategy.Adaptive, 1, cancellationToken).ConfigureAwait(false);
                    Dictionary<string, PointResult>? interleaved = options.Interleave
                        ? await InterleavedAsync(model, shaped, reuseOptions, rates, options.Restorer, tokens, [.. options.Strategies.Where(n => PrefillStrategy.Parse(n).Mode != PrefillMode.ComputeOnly)],
                            options.Repeats, cancellationToken).ConfigureAwait(false)
                        : null;
                    foreach (string name in options.Strategies)
                    {
                        PrefillStrategy strategy = PrefillStrategy.Parse(name);
                        PointResult result = strategy.Mode == PrefillMode.ComputeOnly
                            ? new PointResult(computeOnly, 0, 0, 0, "")
                            : interleaved?[name] ?? await MedianAsync(model, shaped, reuseOptions, rates, options.Restorer, tokens, strategy, options.Repeats, cancellationToken).ConfigureAwait(false);
                        points.Add(new TtftPoint(context, options.RealLinkMbps is null ? "shaper" : "netns", mbps, name, result.TtftMs, result.Restored, result.Failed, result.Bytes, result.Variants));
                        options.Log?.Invoke($"  {context} tokens, {mbps,6} Mbit/s, {name,-16} TTFT {result.TtftMs,8:F0} ms  restored {result.Restored,2} ({result.Variants}) {result.Stages}");
                    }

                    TtftBound bound = Bound(context, mbps, chunkMs, suffixMs, rates, options.Ladder, model, tokens, reuseOptions);
                    bounds.Add(bound);
                    options.Log?.Invoke($"  {context} tokens, {mbps,6} Mbit/s, lower bound {bound.BoundMs:F0} ms (split at chunk {bound.SplitChunk}, {bound.Variant})");
                }

                if (options.Jitter is not null && options.RealLinkMbps is null && context == options.Contexts.Max())
                {
                    var schedule = BandwidthSchedule.Parse(options.Jitter);
                    await using var shaped = new ShapedKvStore(disk, schedule, ownsInner: false);
                    double mean = schedule.MeanBytesPerSecond * 8 / 1e6;
                    foreach (KvVariant? fixedVariant in options.Ladder.Select(v => (KvVariant?)v).Prepend(null))
                    {
                        ReuseOptions variantOptions = fixedVariant is { } only ? reuseOptions with { Ladder = [only] } : reuseOptions;
                        string name = fixedVariant is { } v ? $"ours-fixed-{v}" : "ours";
                        await MedianAsync(model, shaped, variantOptions, rates, options.Restorer, tokens, PrefillStrategy.Adaptive, 1, cancellationToken).ConfigureAwait(false);
                        PointResult result = await MedianAsync(model, shaped, variantOptions, rates, options.Restorer, tokens, PrefillStrategy.Adaptive, Math.Max(3, options.Repeats), cancellationToken).ConfigureAwait(false);
                        points.Add(new TtftPoint(context, $"jitter {options.Jitter}", mean, name, result.TtftMs, result.Restored, result.Failed, result.Bytes, result.Variants));
                        options.Log?.Invoke($"  {context} tokens, jitter {options.Jitter}, {name,-22} TTFT {result.TtftMs,8:F0} ms  restored {result.Restored,2} ({result.Variants})");
                    }
                }
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }

        string machine = $"{Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, engine {model.Device}";
        return new TtftSweepResult(points, bounds, computeMs, machine);
    }

    private sealed record PointResult(double TtftMs, int Restored, int Failed, long Bytes, string Variants, string Stages = "");

    private static async Task<PointResult> MedianAsync(IInferenceModel model, IKvStore store, ReuseOptions options, FetchRates rates, IChunkRestorer? restorer, int[] tokens, PrefillStrategy strategy, int repeats, CancellationToken cancellationToken)
    {
        var results = new List<PrefillReport>(repeats);
        await using var reuse = new KvReuse(model, store, options, rates, restorer);
        using IInferenceSession session = model.CreateSession(tokens.Length);
        var logits = new float[model.Config.VocabSize];
        for (int i = 0; i < repeats; i++)
        {
            results.Add(await reuse.PrefillAsync(session, tokens, strategy, logits, publish: false, cancellationToken).ConfigureAwait(false));
        }

        PrefillReport median = results.OrderBy(r => r.TimeToFirstToken).ElementAt(results.Count / 2);
        return new PointResult(median.TimeToFirstToken.TotalMilliseconds, median.RestoredChunks, median.FailedChunks, median.BytesFetched,
            string.Join(" ", median.Variants.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key}:{p.Value}")), Stages(median));
    }

    /// <summary>Each strategy's median over <paramref name="repeats"/> rounds, every round running each strategy once in a rotating order.</summary>
    private static async Task<Dictionary<string, PointResult>> InterleavedAsync(IInferenceModel model, IKvStore store, ReuseOptions options, FetchRates rates, IChunkRestorer? restorer,
        int[] tokens, IReadOnlyList<string> strategies, int repeats, CancellationToken cancellationToken)
    {
        var runs = strategies.ToDictionary(name => name, _ => new List<PointResult>());
        for (int round = 0; round < repeats; round++)
        {
            for (int i = 0; i < strategies.Count; i++)
            {
                string name = strategies[(i + round) % strategies.Count];
                runs[name].Add(await MedianAsync(model, store, options, rates, restorer, tokens, PrefillStrategy.Parse(name), 1, cancellationToken).ConfigureAwait(false));
            }
        }

        return runs.ToDictionary(p => p.Key, p => p.Value.OrderBy(r => r.TtftMs).ElementAt(p.Value.Count / 2));
    }

    /// <summary>Busy time and span count per stage, for the log: e.g. "compute 812ms/23 transfer 1200ms/41".</summary>
    private static string Stages(PrefillReport report) =>
        (report.Plan is null ? "" : $"plan {report.Plan} ") +
        (report.SplitChunk >= 0 ? string.Create(System.Globalization.CultureInfo.InvariantCulture, $"split chunk {report.SplitChunk} at layer {report.SplitLayers} ") : "") +
        string.Join(" ", Enum.GetValues<PrefillStage>()
            .Select(stage => (stage, count: report.Timeline.Count(s => s.Stage == stage)))
            .Where(x => x.count > 0)
            .Select(x => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{x.stage.ToString().ToLowerInvariant()} {report.Total(x.stage).TotalMilliseconds:F0}ms/{x.count}")));

    /// <summary>Times a chunk-by-chunk prefill (the engine's compute rate by position) and the suffix.</summary>
    private static double[] Calibrate(IInferenceModel model, int[] tokens, int chunkTokens, int chunks, FetchRates rates, out double suffixMs)
    {
        using IInferenceSession session = model.CreateSession(tokens.Length);
        var logits = new float[model.Config.VocabSize];
        var ms = new double[chunks];
        for (int repeat = 0; repeat < 2; repeat++)
        {
            session.Reset();
            for (int chunk = 0; chunk < chunks; chunk++)
            {
                long t0 = Stopwatch.GetTimestamp();
                session.Prefill(tokens.AsSpan(chunk * chunkTokens, chunkTokens), chunk * chunkTokens, logits);
                double elapsed = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                ms[chunk] = repeat == 0 ? elapsed : Math.Min(ms[chunk], elapsed);
                rates.ObserveCompute(chunk, elapsed / 1000);
            }
        }

        long s0 = Stopwatch.GetTimestamp();
        session.Prefill(tokens.AsSpan(chunks * chunkTokens), chunks * chunkTokens, logits);
        suffixMs = Stopwatch.GetElapsedTime(s0).TotalMilliseconds;
        return ms;
    }

    /// <summary>
    /// DESIGN.md's bound: the best split k of max(compute [0, k), fetch [k, N)) plus the suffix, where fetching m chunks
    /// as a variant takes m x max(transfer, decode, restore) + the other stages of one chunk (a perfect pipeline) and
    /// transfer = the variant's measured bytes at the nominal bandwidth.
    /// </summary>
    private static TtftBound Bound(int context, double mbps, double[] chunkMs, double suffixMs, FetchRates rates, IReadOnlyList<KvVariant> ladder, IInferenceModel model, int[] tokens, ReuseOptions options)
    {
        ContextPlan plan = ContextPlan.Create(model.Fingerprint, options.TenantSalt, tokens, options.ChunkTokens, model.Config.NumLayers, model.Config.NumKvHeads, model.Config.HeadDim, model.KvStorageDType);
        double bytesPerMs = mbps * 1e6 / 8 / 1000;
        int n = chunkMs.Length;
        double best = double.MaxValue;
        int bestSplit = n;
        string bestVariant = "compute";
        foreach (KvVariant variant in ladder)
        {
            (double transfer, double decode, double restore) = rates.ChunkSeconds(variant, plan.ChunkBytes);
            double bandwidth = rates.BandwidthBytesPerSecond;
            double transferMs = transfer * bandwidth / bytesPerMs; // measured bytes at the nominal rate
            double decodeMs = decode * 1000, restoreMs = restore * 1000;
            double bottleneck = Math.Max(transferMs, Math.Max(decodeMs, restoreMs));
            double latency = transferMs + decodeMs + restoreMs - bottleneck;
            double compute = 0;
            for (int k = 0; k <= n; k++)
            {
                double fetch = k == n ? 0 : ((n - k) * bottleneck) + latency;
                double total = Math.Max(compute, fetch);
                if (total < best)
                {
                    (best, bestSplit, bestVariant) = (total, k, k == n ? "compute" : variant.ToString());
                }

                if (k < n)
                {
                    compute += chunkMs[k];
                }
            }
        }

        return new TtftBound(context, mbps, best + suffixMs, bestSplit, bestVariant);
    }

    /// <summary>Tokens of the documents (<c>*.txt</c>), in file order, concatenated until <paramref name="count"/> are collected.</summary>
    public static int[] Corpus(IInferenceModel model, string directory, int count)
    {
        var tokens = new List<int>(count);
        foreach (string file in Directory.GetFiles(directory, "*.txt").Order(StringComparer.Ordinal))
        {
            tokens.AddRange(model.Tokenizer.Encode(File.ReadAllText(file)));
            if (tokens.Count >= count)
            {
                return [.. tokens.Take(count)];
            }
        }

        throw new ArgumentException($"The documents in {directory} hold {tokens.Count} tokens; the sweep needs {count}.", nameof(directory));
    }
}
