using System.Diagnostics.Metrics;
using KvFetcher.Fetch.Fetching;
using Microsoft.Extensions.Logging;

namespace KvFetcher.Fetch.Telemetry;

/// <summary>
/// What the fetcher reports, per chunk: restored chunks and their bytes by stored variant
/// (<c>kvfetch_reuse_restored_chunks_total{variant}</c>, <c>kvfetch_reuse_restored_bytes_total{variant}</c>), stored chunks
/// computed instead by reason (<c>kvfetch_reuse_fallbacks_total{reason}</c>), decode time by variant
/// (<c>kvfetch_reuse_chunk_decode_duration_seconds{variant}</c>); and each fallback as a log event (<see cref="FetchLog"/>).
/// </summary>
internal sealed class ReuseTelemetry
{
    private static readonly double[] s_bounds = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

    private readonly Counter<long> _restoredChunks;
    private readonly Counter<long> _restoredBytes;
    private readonly Counter<long> _fallbacks;
    private readonly Histogram<double> _decode;

    public ReuseTelemetry(Meter meter, ILogger logger)
    {
        Logger = logger;
        _restoredChunks = meter.CreateCounter<long>("kvfetch.reuse.restored.chunks", "{chunk}", "Chunks restored from the store, by stored variant.");
        _restoredBytes = meter.CreateCounter<long>("kvfetch.reuse.restored", "By", "Container bytes of the chunks restored from the store, by stored variant.");
        _fallbacks = meter.CreateCounter<long>("kvfetch.reuse.fallbacks", "{chunk}", "Stored chunks computed instead of restored, by reason.");
        _decode = meter.CreateHistogram("kvfetch.reuse.chunk.decode.duration", "s", "Time to decode one fetched chunk, by stored variant.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = s_bounds });
    }

    public ILogger Logger { get; }

    public void Restored(string variant, long bytes)
    {
        var tag = new KeyValuePair<string, object?>("variant", variant);
        _restoredChunks.Add(1, tag);
        _restoredBytes.Add(bytes, tag);
    }

    public void Decoded(string variant, double seconds) => _decode.Record(seconds, new KeyValuePair<string, object?>("variant", variant));

    /// <summary>Counts one fallback (the caller logs it with its cause).</summary>
    public void Fallback(FetchOutcome reason) => _fallbacks.Add(1, new KeyValuePair<string, object?>("reason", ReasonOf(reason)));

    /// <summary>Counts a chunk the engine took back mid-transfer because computing it was predicted faster.</summary>
    public void TakenBack() => _fallbacks.Add(1, new KeyValuePair<string, object?>("reason", "taken_back"));

    /// <summary>The label of a fallback reason (also the key of <see cref="Scheduling.RestoreReport.Fallbacks"/>).</summary>
    public static string ReasonOf(FetchOutcome outcome) => outcome switch
    {
        FetchOutcome.Missing => "missing",
        FetchOutcome.Corrupt => "corrupt",
        FetchOutcome.Unauthentic => "unauthentic",
        FetchOutcome.TimedOut => "timed_out",
        FetchOutcome.StoreError => "store_error",
        FetchOutcome.RestoreFailed => "restore_failed",
        _ => "not_fetched",
    };
}
