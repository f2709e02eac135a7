using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using KvFetcher.Hosting;
using KvFetcher.Store;

namespace KvFetcher.Server;

/// <summary>
/// The server's counters and per-route latency histograms, written in the Prometheus text exposition format
/// (version 0.0.4) together with the store's own <see cref="StoreStats"/>.
/// </summary>
internal sealed class ServerMetrics
{
    /// <summary>The route labels, in the order their histograms are kept.</summary>
    public static readonly string[] Routes = ["get", "head", "put", "delete", "lookup", "stats", "healthz", "metrics", "other"];

    /// <summary>Upper bounds of the latency buckets, in seconds (+Inf is implied).</summary>
    private static readonly double[] s_bounds = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private readonly SecondsHistogram[] _latency;
    private readonly ConcurrentDictionary<(int Route, int Status), StrongBox<long>> _requests = new();
    private long _receivedBytes;
    private long _sentBytes;

    public ServerMetrics()
    {
        _latency = new SecondsHistogram[Routes.Length];
        for (int i = 0; i < _latency.Length; i++)
        {
            _latency[i] = new SecondsHistogram(s_bounds);
        }
    }

    public static int RouteIndex(string? label)
    {
        int index = label is null ? -1 : Array.IndexOf(Routes, label);
        return index < 0 ? Routes.Length - 1 : index;
    }

    public void ObserveRequest(int route, int status, TimeSpan elapsed)
    {
        _latency[route].Observe(elapsed.TotalSeconds);
        StrongBox<long> counter = _requests.GetOrAdd((route, status), static _ => new StrongBox<long>());
        Interlocked.Increment(ref counter.Value);
    }

    public void AddReceived(long bytes) => Interlocked.Add(ref _receivedBytes, bytes);

    public void AddSent(long bytes) => Interlocked.Add(ref _sentBytes, bytes);

    /// <summary>The exposition text: server counters, latency histograms and the store's stats.</summary>
    public string Format(StoreStats store)
    {
        var text = new StringBuilder(4096);
        PrometheusText.Header(text, "kvfetch_http_requests_total", "counter", "HTTP requests by route and status code.");
        foreach (KeyValuePair<(int Route, int Status), StrongBox<long>> entry in _requests.OrderBy(e => e.Key))
        {
            text.Append(CultureInfo.InvariantCulture, $"kvfetch_http_requests_total{{route=\"{Routes[entry.Key.Route]}\",code=\"{entry.Key.Status}\"}} {Volatile.Read(ref entry.Value.Value)}\n");
        }

        PrometheusText.Header(text, "kvfetch_http_request_duration_seconds", "histogram", "Time from request start to response end, by route.");
        for (int route = 0; route < Routes.Length; route++)
        {
            _latency[route].Format(text, "kvfetch_http_request_duration_seconds", $"route=\"{Routes[route]}\"");
        }

        PrometheusText.Sample(text, "kvfetch_http_received_bytes_total", "counter", "Object bytes received in PUT bodies.", Interlocked.Read(ref _receivedBytes));
        PrometheusText.Sample(text, "kvfetch_http_sent_bytes_total", "counter", "Object bytes sent in GET bodies.", Interlocked.Read(ref _sentBytes));
        PrometheusText.Sample(text, "kvfetch_store_hits_total", "counter", "Gets that found their object.", store.Hits);
        PrometheusText.Sample(text, "kvfetch_store_misses_total", "counter", "Gets that found nothing (or a corrupt object).", store.Misses);
        PrometheusText.Sample(text, "kvfetch_store_bytes_in_total", "counter", "Bytes stored.", store.BytesIn);
        PrometheusText.Sample(text, "kvfetch_store_bytes_out_total", "counter", "Bytes read out.", store.BytesOut);
        PrometheusText.Sample(text, "kvfetch_store_evictions_total", "counter", "Objects evicted to make room.", store.Evictions);
        PrometheusText.Sample(text, "kvfetch_store_corrupt_objects_total", "counter", "Objects that failed verification and were removed.", store.CorruptObjects);
        PrometheusText.Sample(text, "kvfetch_store_objects", "gauge", "Objects stored.", store.Objects);
        PrometheusText.Sample(text, "kvfetch_store_used_bytes", "gauge", "Bytes stored.", store.UsedBytes);
        if (store.CapacityBytes is long capacity)
        {
            PrometheusText.Sample(text, "kvfetch_store_capacity_bytes", "gauge", "The store's capacity.", capacity);
        }

        return text.ToString();
    }
}
