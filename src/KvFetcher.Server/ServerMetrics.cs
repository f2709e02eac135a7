using System.Diagnostics.Metrics;
using KvFetcher.Store;

namespace KvFetcher.Server;

/// <summary>
/// The store server's instruments on its <c>KvFetcher</c> meter (exported by <see cref="Hosting.KvFetcherMetrics"/>):
/// requests by route and status with their latency, object bytes received and sent, and the store's own
/// <see cref="StoreStats"/> as observable instruments, read once per scrape (<see cref="RefreshAsync"/>).
/// </summary>
internal sealed class ServerMetrics
{
    /// <summary>The route labels (anything else is <c>other</c>).</summary>
    public static readonly string[] Routes = ["get", "head", "put", "delete", "lookup", "stats", "healthz", "metrics", "other"];

    /// <summary>Upper bounds of the latency buckets, in seconds (+Inf is implied).</summary>
    private static readonly double[] s_bounds = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private readonly IKvStore _store;
    private readonly Counter<long> _requests;
    private readonly Histogram<double> _latency;
    private readonly Counter<long> _received;
    private readonly Counter<long> _sent;
    private StoreStats _stats = new();

    public ServerMetrics(Meter meter, IKvStore store)
    {
        _store = store;
        _requests = meter.CreateCounter<long>("kvfetch.http.requests", "{request}", "HTTP requests by route and status code.");
        _latency = meter.CreateHistogram("kvfetch.http.request.duration", "s", "Time from request start to response end, by route.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = s_bounds });
        _received = meter.CreateCounter<long>("kvfetch.http.received", "By", "Object bytes received in PUT bodies.");
        _sent = meter.CreateCounter<long>("kvfetch.http.sent", "By", "Object bytes sent in GET bodies.");
        meter.CreateObservableCounter("kvfetch.store.hits", () => _stats.Hits, "{get}", "Gets that found their object.");
        meter.CreateObservableCounter("kvfetch.store.misses", () => _stats.Misses, "{get}", "Gets that found nothing (or a corrupt object).");
        meter.CreateObservableCounter("kvfetch.store.written", () => _stats.BytesIn, "By", "Bytes stored (object bytes taken by puts).");
        meter.CreateObservableCounter("kvfetch.store.read", () => _stats.BytesOut, "By", "Bytes read out by gets.");
        meter.CreateObservableCounter("kvfetch.store.evictions", () => _stats.Evictions, "{object}", "Objects evicted to make room.");
        meter.CreateObservableCounter("kvfetch.store.corrupt_objects", () => _stats.CorruptObjects, "{object}", "Objects that failed verification and were removed.");
        meter.CreateObservableGauge("kvfetch.store.objects", () => _stats.Objects, "{object}", "Objects stored.");
        meter.CreateObservableGauge("kvfetch.store.used", () => _stats.UsedBytes, "By", "Bytes stored.");
        meter.CreateObservableGauge("kvfetch.store.capacity", () => _stats.CapacityBytes is long capacity ? [new Measurement<long>(capacity)] : Array.Empty<Measurement<long>>(),
            "By", "The store's capacity.");
    }

    public static string RouteOf(string? label) => label is not null && Array.IndexOf(Routes, label) >= 0 ? label : "other";

    public void ObserveRequest(string route, int status, TimeSpan elapsed)
    {
        route = RouteOf(route);
        _latency.Record(elapsed.TotalSeconds, new KeyValuePair<string, object?>("route", route));
        _requests.Add(1, new KeyValuePair<string, object?>("route", route), new KeyValuePair<string, object?>("code", StatusText(status)));
    }

    public void AddReceived(long bytes) => _received.Add(bytes);

    public void AddSent(long bytes) => _sent.Add(bytes);

    /// <summary>Reads the store's statistics that the observable instruments report (before each scrape).</summary>
    public async Task RefreshAsync(CancellationToken cancellationToken) => _stats = await _store.GetStatsAsync(cancellationToken).ConfigureAwait(false);

    private static readonly string[] s_codes = [.. Enumerable.Range(0, 600).Select(c => c.ToString(System.Globalization.CultureInfo.InvariantCulture))];

    /// <summary>The status code as a label value, without allocating.</summary>
    internal static string StatusText(int status) => (uint)status < (uint)s_codes.Length ? s_codes[status] : status.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
