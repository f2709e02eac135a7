using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using KvFetcher.Hosting;
using KvFetcher.Serving.Scheduling;

namespace KvFetcher.Serving;

/// <summary>
/// Counters and histograms of a serving engine, written in the Prometheus text exposition format (0.0.4): time to first
/// token and its parts (queue, fetch, prefill), reuse hit rate, prompt tokens reused vs computed, bytes fetched,
/// fallbacks to recompute, requests by route and status. Thread-safe and lock-free.
/// </summary>
public sealed class ServingMetrics
{
    /// <summary>Upper bounds of the latency buckets, in seconds (+Inf is implied).</summary>
    private static readonly double[] s_bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

    private readonly SecondsHistogram _ttft = new(s_bounds);
    private readonly SecondsHistogram _queue = new(s_bounds);
    private readonly SecondsHistogram _fetch = new(s_bounds);
    private readonly SecondsHistogram _prefill = new(s_bounds);
    private readonly SecondsHistogram _request = new(s_bounds);
    private readonly ConcurrentDictionary<(string Route, int Status), StrongBox<long>> _requests = new();
    private long _prefills;
    private long _lookups;
    private long _hits;
    private long _promptTokens;
    private long _reusedTokens;
    private long _generatedTokens;
    private long _bytesFetched;
    private long _fallbackChunks;
    private long _fetchedChunks;
    private long _computedStoredChunks;
    private long _lookupFailures;
    private long _publishedChunks;
    private long _rejected;
    private long _failed;
    private long _cancelled;

    /// <summary>Requests that got their first token.</summary>
    public long Prefills => Interlocked.Read(ref _prefills);

    /// <summary>Requests whose prompt had a reusable chunk and so were looked up in the store.</summary>
    public long Lookups => Interlocked.Read(ref _lookups);

    /// <summary>Looked-up requests that reused at least one chunk.</summary>
    public long Hits => Interlocked.Read(ref _hits);

    public long PromptTokens => Interlocked.Read(ref _promptTokens);

    public long ReusedTokens => Interlocked.Read(ref _reusedTokens);

    public long BytesFetched => Interlocked.Read(ref _bytesFetched);

    /// <summary>Stored chunks that could not be fetched and were computed instead.</summary>
    public long FallbackChunks => Interlocked.Read(ref _fallbackChunks);

    /// <summary>Stored chunks the fetcher restored.</summary>
    public long FetchedChunks => Interlocked.Read(ref _fetchedChunks);

    /// <summary>Stored chunks the engine computed instead (its side of the meeting with the fetcher, and fallbacks).</summary>
    public long ComputedStoredChunks => Interlocked.Read(ref _computedStoredChunks);

    /// <summary>Lookups that failed (store down or slow): the whole prompt computed.</summary>
    public long LookupFailures => Interlocked.Read(ref _lookupFailures);

    /// <summary>Requests refused at capacity (HTTP 429).</summary>
    public long Rejected => Interlocked.Read(ref _rejected);

    internal void ObserveFirstToken(PrefillInfo info)
    {
        Interlocked.Increment(ref _prefills);
        _ttft.Observe(info.TimeToFirstToken.TotalSeconds);
        _queue.Observe(info.Queue.TotalSeconds);
        _fetch.Observe(info.Fetch.TotalSeconds);
        _prefill.Observe(info.Prefill.TotalSeconds);
        Interlocked.Add(ref _promptTokens, info.PromptTokens);
        Interlocked.Add(ref _reusedTokens, info.ReusedTokens);
        Interlocked.Add(ref _bytesFetched, info.BytesFetched);
        Interlocked.Add(ref _fallbackChunks, info.FailedChunks);
        if (info.Reuse is { } split)
        {
            Interlocked.Add(ref _fetchedChunks, split.FetchedChunks);
            Interlocked.Add(ref _computedStoredChunks, split.ComputedChunks);
        }
        if (info.LookedUp)
        {
            Interlocked.Increment(ref _lookups);
        }

        if (info.ReusedTokens > 0)
        {
            Interlocked.Increment(ref _hits);
        }

        if (info.LookupFailed)
        {
            Interlocked.Increment(ref _lookupFailures);
        }
    }

    internal void ObserveCompleted(GenerationResult result)
    {
        Interlocked.Add(ref _generatedTokens, result.CompletionTokens);
        _request.Observe(result.Elapsed.TotalSeconds);
    }

    internal void ObservePublishedChunk() => Interlocked.Increment(ref _publishedChunks);

    internal void ObserveRejected() => Interlocked.Increment(ref _rejected);

    internal void ObserveFailed() => Interlocked.Increment(ref _failed);

    internal void ObserveCancelled() => Interlocked.Increment(ref _cancelled);

    internal void ObserveRequest(string route, int status)
    {
        StrongBox<long> counter = _requests.GetOrAdd((route, status), static _ => new StrongBox<long>());
        Interlocked.Increment(ref counter.Value);
    }

    /// <summary>The exposition text; <paramref name="gauges"/> adds the scheduler's current state.</summary>
    public string Format(EngineScheduler? gauges = null, long? publisherFailures = null, long? publisherDropped = null)
    {
        var text = new StringBuilder(8192);
        PrometheusText.Header(text, "kvfetch_llm_http_requests_total", "counter", "HTTP requests by route and status code.");
        foreach (KeyValuePair<(string Route, int Status), StrongBox<long>> entry in _requests.OrderBy(e => e.Key))
        {
            text.Append(CultureInfo.InvariantCulture, $"kvfetch_llm_http_requests_total{{route=\"{entry.Key.Route}\",code=\"{entry.Key.Status}\"}} {Volatile.Read(ref entry.Value.Value)}\n");
        }

        PrometheusText.Header(text, "kvfetch_llm_ttft_seconds", "histogram", "Time to first token: from arrival to the first token.");
        _ttft.Format(text, "kvfetch_llm_ttft_seconds");
        PrometheusText.Header(text, "kvfetch_llm_ttft_queue_seconds", "histogram", "TTFT part: waiting for a session (engine at capacity).");
        _queue.Format(text, "kvfetch_llm_ttft_queue_seconds");
        PrometheusText.Header(text, "kvfetch_llm_ttft_fetch_seconds", "histogram", "TTFT part: looking up and fetching the stored prefix, off the engine.");
        _fetch.Format(text, "kvfetch_llm_ttft_fetch_seconds");
        PrometheusText.Header(text, "kvfetch_llm_ttft_prefill_seconds", "histogram", "TTFT part: computing the rest of the prompt, interleaved with other requests.");
        _prefill.Format(text, "kvfetch_llm_ttft_prefill_seconds");
        PrometheusText.Header(text, "kvfetch_llm_request_seconds", "histogram", "From arrival to the last token.");
        _request.Format(text, "kvfetch_llm_request_seconds");
        PrometheusText.Sample(text, "kvfetch_llm_prefills_total", "counter", "Requests that got their first token.", Prefills);
        PrometheusText.Sample(text, "kvfetch_llm_reuse_lookups_total", "counter", "Requests with a reusable prefix length, looked up in the store.", Lookups);
        PrometheusText.Sample(text, "kvfetch_llm_reuse_hits_total", "counter", "Looked-up requests that reused at least one chunk.", Hits);
        long lookups = Lookups;
        PrometheusText.Sample(text, "kvfetch_llm_reuse_hit_ratio", "gauge", "Hits / lookups since start.", lookups == 0 ? 0 : (double)Hits / lookups);
        PrometheusText.Sample(text, "kvfetch_llm_prompt_tokens_total", "counter", "Prompt tokens of all requests.", PromptTokens);
        PrometheusText.Sample(text, "kvfetch_llm_reused_tokens_total", "counter", "Prompt tokens whose KV came from the store.", ReusedTokens);
        PrometheusText.Sample(text, "kvfetch_llm_computed_tokens_total", "counter", "Prompt tokens the engine computed.", PromptTokens - ReusedTokens);
        PrometheusText.Sample(text, "kvfetch_llm_generated_tokens_total", "counter", "Tokens generated.", Interlocked.Read(ref _generatedTokens));
        PrometheusText.Sample(text, "kvfetch_llm_fetched_bytes_total", "counter", "Bytes fetched from the store.", BytesFetched);
        PrometheusText.Sample(text, "kvfetch_llm_fallback_chunks_total", "counter", "Stored chunks that failed to fetch and were recomputed.", FallbackChunks);
        PrometheusText.Sample(text, "kvfetch_llm_reuse_fetched_chunks_total", "counter", "Stored chunks the fetcher restored.", FetchedChunks);
        PrometheusText.Sample(text, "kvfetch_llm_reuse_computed_chunks_total", "counter", "Stored chunks the engine computed (its side of the meeting, and fallbacks).", ComputedStoredChunks);
        PrometheusText.Sample(text, "kvfetch_llm_lookup_failures_total", "counter", "Store lookups that failed (store down or slow); the prompt was computed.", LookupFailures);
        PrometheusText.Sample(text, "kvfetch_llm_published_chunks_total", "counter", "Computed chunks queued for storing.", Interlocked.Read(ref _publishedChunks));
        if (publisherFailures is long failures)
        {
            PrometheusText.Sample(text, "kvfetch_llm_publish_failures_total", "counter", "Chunk variants the store failed to take.", failures);
        }

        if (publisherDropped is long dropped)
        {
            PrometheusText.Sample(text, "kvfetch_llm_publish_dropped_total", "counter", "Chunks not stored because the publish queue was full.", dropped);
        }

        PrometheusText.Sample(text, "kvfetch_llm_rejected_total", "counter", "Requests refused at capacity (429).", Rejected);
        PrometheusText.Sample(text, "kvfetch_llm_failed_total", "counter", "Requests that failed inside the engine.", Interlocked.Read(ref _failed));
        PrometheusText.Sample(text, "kvfetch_llm_cancelled_total", "counter", "Requests abandoned by their client.", Interlocked.Read(ref _cancelled));
        if (gauges is not null)
        {
            PrometheusText.Sample(text, "kvfetch_llm_active_sessions", "gauge", "Requests holding a KV cache.", gauges.ActiveSessions);
            PrometheusText.Sample(text, "kvfetch_llm_queued_requests", "gauge", "Requests waiting for a session.", gauges.QueuedRequests);
            PrometheusText.Sample(text, "kvfetch_llm_fetching_requests", "gauge", "Requests in the waiting queue (prefix being fetched).", gauges.FetchingRequests);
        }

        return text.ToString();
    }
}
