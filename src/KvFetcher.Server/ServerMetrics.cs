using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
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

    private readonly Histogram[] _latency;
    private readonly ConcurrentDictionary<(int Route, int Status), StrongBox<long>> _requests = new();
    private long _receivedBytes;
    private long _sentBytes;

    public ServerMetrics()
    {
        _latency = new Histogram[Routes.Length];
        for (int i = 0; i < _latency.Length; i++)
        {
            _latency[i] = new Histogram();
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
        Header(text, "kvfetch_http_requests_total", "counter", "HTTP requests by route and status code.");
        foreach (KeyValuePair<(int Route, int Status), StrongBox<long>> entry in _requests.OrderBy(e => e.Key))
        {
            text.Append(CultureInfo.InvariantCulture, $"kvfetch_http_requests_total{{route=\"{Routes[entry.Key.Route]}\",code=\"{entry.Key.Status}\"}} {Volatile.Read(ref entry.Value.Value)}\n");
        }

        Header(text, "kvfetch_http_request_duration_seconds", "histogram", "Time from request start to response end, by route.");
        for (int route = 0; route < Routes.Length; route++)
        {
            _latency[route].Format(text, "kvfetch_http_request_duration_seconds", Routes[route]);
        }

        Sample(text, "kvfetch_http_received_bytes_total", "counter", "Object bytes received in PUT bodies.", Interlocked.Read(ref _receivedBytes));
        Sample(text, "kvfetch_http_sent_bytes_total", "counter", "Object bytes sent in GET bodies.", Interlocked.Read(ref _sentBytes));
        Sample(text, "kvfetch_store_hits_total", "counter", "Gets that found their object.", store.Hits);
        Sample(text, "kvfetch_store_misses_total", "counter", "Gets that found nothing (or a corrupt object).", store.Misses);
        Sample(text, "kvfetch_store_bytes_in_total", "counter", "Bytes stored.", store.BytesIn);
        Sample(text, "kvfetch_store_bytes_out_total", "counter", "Bytes read out.", store.BytesOut);
        Sample(text, "kvfetch_store_evictions_total", "counter", "Objects evicted to make room.", store.Evictions);
        Sample(text, "kvfetch_store_corrupt_objects_total", "counter", "Objects that failed verification and were removed.", store.CorruptObjects);
        Sample(text, "kvfetch_store_objects", "gauge", "Objects stored.", store.Objects);
        Sample(text, "kvfetch_store_used_bytes", "gauge", "Bytes stored.", store.UsedBytes);
        if (store.CapacityBytes is long capacity)
        {
            Sample(text, "kvfetch_store_capacity_bytes", "gauge", "The store's capacity.", capacity);
        }

        return text.ToString();
    }

    private static void Header(StringBuilder text, string name, string type, string help) =>
        text.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} {type}\n");

    private static void Sample(StringBuilder text, string name, string type, string help, long value)
    {
        Header(text, name, type, help);
        text.Append(CultureInfo.InvariantCulture, $"{name} {value}\n");
    }

    /// <summary>A lock-free cumulative histogram over <see cref="s_bounds"/>.</summary>
    private sealed class Histogram
    {
        private readonly long[] _buckets = new long[s_bounds.Length + 1];
        private long _sumTicks;

        public void Observe(double seconds)
        {
            int bucket = 0;
            while (bucket < s_bounds.Length && seconds > s_bounds[bucket])
            {
                bucket++;
            }

            Interlocked.Increment(ref _buckets[bucket]);
            Interlocked.Add(ref _sumTicks, (long)(seconds * TimeSpan.TicksPerSecond));
        }

        public void Format(StringBuilder text, string name, string route)
        {
            long cumulative = 0;
            for (int i = 0; i < _buckets.Length; i++)
            {
                cumulative += Interlocked.Read(ref _buckets[i]);
                string le = i < s_bounds.Length ? s_bounds[i].ToString(CultureInfo.InvariantCulture) : "+Inf";
                text.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}\n");
            }

            double sum = Interlocked.Read(ref _sumTicks) / (double)TimeSpan.TicksPerSecond;
            text.Append(CultureInfo.InvariantCulture, $"{name}_sum{{route=\"{route}\"}} {sum.ToString("R", CultureInfo.InvariantCulture)}\n");
            text.Append(CultureInfo.InvariantCulture, $"{name}_count{{route=\"{route}\"}} {cumulative}\n");
        }
    }
}
