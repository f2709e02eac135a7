using System.Buffers;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvFetcher.Store.Telemetry;

/// <summary>
/// A store as its user sees it, measured and logged: every call's latency by operation
/// (<c>kvfetch_store_client_operation_duration_seconds{operation="get|put|lookup|exists|delete"}</c>), the bytes read and
/// written (<c>kvfetch_store_client_read_bytes_total</c>, <c>kvfetch_store_client_written_bytes_total</c>), failures by
/// operation (<c>kvfetch_store_client_failures_total</c>), and each failure as a log event (a store that is down
/// logs at Warning once per breaker opening, not once per call: its fast refusals log at Debug).
/// </summary>
public sealed class InstrumentedKvStore : IKvStore
{
    private static readonly double[] s_bounds = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private readonly IKvStore _inner;
    private readonly ILogger _logger;
    private readonly Histogram<double> _duration;
    private readonly Counter<long> _read;
    private readonly Counter<long> _written;
    private readonly Counter<long> _failures;

    /// <param name="inner">The store measured (disposed with this one).</param>
    /// <param name="meter">Where the instruments live (a <c>KvFetcher</c> meter).</param>
    /// <param name="logger">Where failures are logged; none by default.</param>
    public InstrumentedKvStore(IKvStore inner, Meter meter, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentNullException.ThrowIfNull(meter);
        _inner = inner;
        _logger = logger ?? NullLogger.Instance;
        _duration = meter.CreateHistogram("kvfetch.store.client.operation.duration", "s", "Store calls as the engine sees them, by operation.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = s_bounds });
        _read = meter.CreateCounter<long>("kvfetch.store.client.read", "By", "Object bytes read from the store.");
        _written = meter.CreateCounter<long>("kvfetch.store.client.written", "By", "Object bytes written to the store.");
        _failures = meter.CreateCounter<long>("kvfetch.store.client.failures", "{call}", "Store calls that failed, by operation.");
    }

    public string Description => _inner.Description;

    /// <summary>The store measured.</summary>
    public IKvStore Inner => _inner;

    public async ValueTask PutAsync(ObjectKey key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        long start = Stopwatch.GetTimestamp();
        try
        {
            await _inner.PutAsync(key, data, cancellationToken).ConfigureAwait(false);
            _written.Add(data.Length);
        }
        catch (KvStoreException ex)
        {
            Failed("put", ex);
            throw;
        }
        finally
        {
            Record("put", start);
        }
    }

    public async ValueTask<StoreRead> GetAsync(ObjectKey key, IBufferWriter<byte> destination, ByteRange range = default, CancellationToken cancellationToken = default)
    {
        long start = Stopwatch.GetTimestamp();
        try
        {
            StoreRead read = await _inner.GetAsync(key, destination, range, cancellationToken).ConfigureAwait(false);
            _read.Add(read.BytesWritten);
            return read;
        }
        catch (KvStoreException ex)
        {
            Failed("get", ex);
            throw;
        }
        finally
        {
            Record("get", start);
        }
    }

    public async ValueTask<bool[]> ExistsAsync(IReadOnlyList<ObjectKey> keys, CancellationToken cancellationToken = default)
    {
        long start = Stopwatch.GetTimestamp();
        try
        {
            return await _inner.ExistsAsync(keys, cancellationToken).ConfigureAwait(false);
        }
        catch (KvStoreException ex)
        {
            Failed("exists", ex);
            throw;
        }
        finally
        {
            Record("exists", start);
        }
    }

    public async ValueTask<int> LongestPrefixAsync(IReadOnlyList<ObjectKey> chain, CancellationToken cancellationToken = default)
    {
        long start = Stopwatch.GetTimestamp();
        try
        {
            return await _inner.LongestPrefixAsync(chain, cancellationToken).ConfigureAwait(false);
        }
        catch (KvStoreException ex)
        {
            Failed("lookup", ex);
            throw;
        }
        finally
        {
            Record("lookup", start);
        }
    }

    public async ValueTask<bool> DeleteAsync(ObjectKey key, CancellationToken cancellationToken = default)
    {
        long start = Stopwatch.GetTimestamp();
        try
        {
            return await _inner.DeleteAsync(key, cancellationToken).ConfigureAwait(false);
        }
        catch (KvStoreException ex)
        {
            Failed("delete", ex);
            throw;
        }
        finally
        {
            Record("delete", start);
        }
    }

    public ValueTask<StoreStats> GetStatsAsync(CancellationToken cancellationToken = default) => _inner.GetStatsAsync(cancellationToken);

    public ValueTask DisposeAsync() => _inner.DisposeAsync();

    private void Record(string operation, long start) =>
        _duration.Record(Stopwatch.GetElapsedTime(start).TotalSeconds, new KeyValuePair<string, object?>("operation", operation));

    private void Failed(string operation, KvStoreException ex)
    {
        _failures.Add(1, new KeyValuePair<string, object?>("operation", operation));
        if (ex is KvStoreUnavailableException)
        {
            StoreLog.Unavailable(_logger, operation, _inner.Description, ex.Message);
        }
        else
        {
            StoreLog.OperationFailed(_logger, operation, _inner.Description, ex.Message, ex.InnerException);
        }
    }
}
