using System.Buffers;

using KvFetcher.Store.Telemetry;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvFetcher.Store.Resilience;

/// <summary>
/// Puts a store behind circuit breakers and deadlines, so a store that is down, slow or silent costs its callers a
/// bounded time: lookups and writes get deadlines of their own; errors, missed deadlines and stalls (calls their caller
/// abandoned after <see cref="ResilientKvStoreOptions.StallTimeout"/>) count as failures; after a few in a row calls of
/// that kind fail at once with <see cref="KvStoreUnavailableException"/> (a miss to the fetcher, a counted failure to
/// the publisher) until a probe call after the break finds the store answering again. Lookups, reads of objects and
/// writes have a breaker each (<see cref="Lookups"/>, <see cref="Reads"/>, <see cref="Writes"/>): a store that
/// answers lookups but stalls every body is cut off for bodies, and a lookup's success does not hide that.
/// <see cref="KvStores.OpenAsync(string, string?, long?, CancellationToken)"/> returns every store this way; the breaker is the one place that decides whether the
/// store is worth asking.
/// </summary>
public sealed class ResilientKvStore : IKvStore
{
    private const int MaxProblemLength = 160;
    private static readonly ObjectKey s_probeKey = ObjectKey.Parse("kvfetch-probe");

    private readonly IKvStore _inner;
    private readonly ResilientKvStoreOptions _options;
    private readonly TimeProvider _time;
    private readonly bool _ownsInner;
    private readonly ILogger _logger;
    private Task _backgroundProbe = Task.CompletedTask;

    /// <param name="inner">The store to protect.</param>
    /// <param name="options">Deadlines and breaker settings.</param>
    /// <param name="timeProvider">The clock (tests pass a fake one).</param>
    /// <param name="ownsInner">Whether disposing this store disposes <paramref name="inner"/>.</param>
    /// <param name="logger">Where the breakers' openings and closings are logged; none by default.</param>
    public ResilientKvStore(IKvStore inner, ResilientKvStoreOptions? options = null, TimeProvider? timeProvider = null, bool ownsInner = true, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(inner);
        options ??= new ResilientKvStoreOptions();
        options.Validate();
        _inner = inner;
        _options = options;
        _time = timeProvider ?? TimeProvider.System;
        _ownsInner = ownsInner;
        _logger = logger ?? NullLogger.Instance;
        Lookups = new CircuitBreaker(options.Breaker, _time);
        Reads = new CircuitBreaker(options.Breaker, _time);
        Writes = new CircuitBreaker(options.Breaker, _time);
    }

    public string Description => _inner.Description;

    /// <summary>The store behind the breaker.</summary>
    public IKvStore Inner => _inner;

    /// <summary>The health of lookups (exists, longest prefix) and stats.</summary>
    public CircuitBreaker Lookups { get; }

    /// <summary>The health of object reads (gets).</summary>
    public CircuitBreaker Reads { get; }

    /// <summary>
    /// The health of writes (puts, deletes): a publisher may consult it (<see cref="CircuitBreaker.State"/> is
    /// <see cref="CircuitState.Open"/>) to skip encoding chunks that could not be stored anyway.
    /// </summary>
    public CircuitBreaker Writes { get; }

    public async ValueTask PutAsync(ObjectKey key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default) =>
        await RunAsync(Writes, "put", _options.OperationTimeout, (key, data), static async (store, s, token) =>
        {
            await store.PutAsync(s.key, s.data, token).ConfigureAwait(false);
            return true;
        }, cancellationToken).ConfigureAwait(false);

    public ValueTask<StoreRead> GetAsync(ObjectKey key, IBufferWriter<byte> destination, ByteRange range = default, CancellationToken cancellationToken = default) =>
        RunAsync(Reads, "get", timeout: null, (key, destination, range), static (store, s, token) => store.GetAsync(s.key, s.destination, s.range, token), cancellationToken);

    public ValueTask<bool[]> ExistsAsync(IReadOnlyList<ObjectKey> keys, CancellationToken cancellationToken = default) =>
        RunAsync(Lookups, "lookup", _options.LookupTimeout, keys, static (store, k, token) => store.ExistsAsync(k, token), cancellationToken);

    public ValueTask<int> LongestPrefixAsync(IReadOnlyList<ObjectKey> chain, CancellationToken cancellationToken = default) =>
        RunAsync(Lookups, "lookup", _options.LookupTimeout, chain, static (store, c, token) => store.LongestPrefixAsync(c, token), cancellationToken);

    public ValueTask<bool> DeleteAsync(ObjectKey key, CancellationToken cancellationToken = default) =>
        RunAsync(Writes, "delete", _options.OperationTimeout, key, static (store, k, token) => store.DeleteAsync(k, token), cancellationToken);

    public ValueTask<StoreStats> GetStatsAsync(CancellationToken cancellationToken = default) =>
        RunAsync(Lookups, "stats", _options.OperationTimeout, 0, static (store, _, token) => store.GetStatsAsync(token), cancellationToken);

    /// <summary>
    /// Asks the store one lookup (through the breaker, within the lookup deadline): null when it answers, otherwise one
    /// line saying why not. For a caller that reports an unreachable store at start instead of failing.
    /// </summary>
    public async Task<string?> CheckAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            await ExistsAsync([s_probeKey], cancellationToken).ConfigureAwait(false);
            return null;
        }
        catch (KvStoreException ex)
        {
            // One line: some clients (StackExchange.Redis) append pages of diagnostics.
            string message = ex.Message.ReplaceLineEndings(" ");
            return message.Length <= MaxProblemLength ? message : string.Concat(message.AsSpan(0, MaxProblemLength), "…");
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _backgroundProbe.ConfigureAwait(false); // bounded by the lookup deadline; it never throws
        if (_ownsInner)
        {
            await _inner.DisposeAsync().ConfigureAwait(false);
        }
    }

    public override string ToString() => Description;

    /// <summary>The half-open probe of <see cref="Lookups"/>: one lookup within the lookup deadline; its outcome closes or reopens the breaker.</summary>
    private async Task ProbeLookupsAsync()
    {
        CallOutcome outcome = CallOutcome.Failure;
        string? reason = null;
        try
        {
            using var deadline = new CancellationTokenSource(_options.LookupTimeout);
            await _inner.ExistsAsync([s_probeKey], deadline.Token).ConfigureAwait(false);
            outcome = CallOutcome.Success;
        }
        catch (OperationCanceledException)
        {
            reason = $"lookup: no answer within {_options.LookupTimeout.TotalSeconds:0.###} s";
        }
        catch (Exception ex)
        {
            // Whatever the store threw, the probe reports it as the breaker's last failure and ends.
            reason = ex.Message;
        }
        finally
        {
            Exit(Lookups, "lookup", probe: true, outcome, reason);
        }
    }

    private async ValueTask<T> RunAsync<TState, T>(CircuitBreaker breaker, string operation, TimeSpan? timeout, TState state,
        Func<IKvStore, TState, CancellationToken, ValueTask<T>> call, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (!breaker.TryEnter(out bool probe))
        {
            throw new KvStoreUnavailableException(
                $"{Description}: {operation} unavailable after {breaker.ConsecutiveFailures} failures in a row (last: {breaker.LastFailure}); next try in {breaker.RetryIn.TotalSeconds:0.#} s.");
        }

        if (probe && breaker == Lookups)
        {
            // Every prefill waits for its lookup: no request pays for finding out whether the store is back. The probe
            // is a lookup of its own in the background; this caller gets a miss at once.
            _backgroundProbe = Task.Run(ProbeLookupsAsync, CancellationToken.None);
            throw new KvStoreUnavailableException($"{Description}: {operation} unavailable (last: {breaker.LastFailure}); probing it in the background.");
        }

        long start = _time.GetTimestamp();
        CancellationTokenSource? deadline = null;
        CallOutcome outcome = CallOutcome.Neutral;
        string? reason = null;
        try
        {
            if (timeout is { } limit)
            {
                deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                deadline.CancelAfter(limit);
            }

            T result = await call(_inner, state, deadline?.Token ?? cancellationToken).ConfigureAwait(false);
            outcome = CallOutcome.Success;
            return result;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The caller gave up: a stall if the store had kept it waiting long enough, otherwise nothing to learn.
            TimeSpan waited = _time.GetElapsedTime(start);
            if (waited >= _options.StallTimeout)
            {
                (outcome, reason) = (CallOutcome.Failure, $"{operation} stalled for {waited.TotalSeconds:0.##} s");
            }

            throw;
        }
        catch (OperationCanceledException ex) when (deadline?.IsCancellationRequested == true)
        {
            (outcome, reason) = (CallOutcome.Failure, $"{operation}: no answer within {timeout!.Value.TotalSeconds:0.###} s");
            throw new KvStoreException($"{Description}: {reason}.", ex);
        }
        catch (KvStoreFullException)
        {
            outcome = CallOutcome.Success; // it answered: it is full
            throw;
        }
        catch (KvStoreException ex)
        {
            (outcome, reason) = (CallOutcome.Failure, ex.Message);
            throw;
        }
        finally
        {
            deadline?.Dispose();
            Exit(breaker, operation, probe, outcome, reason);
        }
    }

    // Leaves the breaker, logging when the call opened it or a probe closed it.
    private void Exit(CircuitBreaker breaker, string operation, bool probe, CallOutcome outcome, string? reason)
    {
        long opened = breaker.TimesOpened;
        breaker.Exit(probe, outcome, reason);
        if (breaker.TimesOpened != opened)
        {
            StoreLog.CircuitOpened(_logger, Description, operation, reason ?? "?");
        }
        else if (probe && outcome == CallOutcome.Success)
        {
            StoreLog.CircuitClosed(_logger, Description, operation);
        }
    }
}
