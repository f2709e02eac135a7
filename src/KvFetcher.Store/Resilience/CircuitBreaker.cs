namespace KvFetcher.Store.Resilience;

/// <summary>Where a <see cref="CircuitBreaker"/> stands.</summary>
public enum CircuitState
{
    /// <summary>Calls go through; consecutive failures are counted.</summary>
    Closed,

    /// <summary>Calls fail fast until the break ends.</summary>
    Open,

    /// <summary>The break is over: one call (the probe) goes through; its outcome closes or reopens the circuit.</summary>
    HalfOpen,
}

/// <summary>How a call through a <see cref="CircuitBreaker"/> ended.</summary>
public enum CallOutcome
{
    /// <summary>The other side answered (a miss or a refusal is an answer).</summary>
    Success,

    /// <summary>No usable answer: an error, a timeout or a stall.</summary>
    Failure,

    /// <summary>Says nothing about the other side (the caller gave up early, or its own arguments were wrong).</summary>
    Neutral,
}

/// <summary>When a <see cref="CircuitBreaker"/> opens and for how long.</summary>
public sealed record CircuitBreakerOptions
{
    /// <summary>Consecutive failures that open the circuit.</summary>
    public int FailureThreshold { get; init; } = 2;

    /// <summary>The first break; each failed probe doubles it, up to <see cref="MaxBreakDuration"/>.</summary>
    public TimeSpan BreakDuration { get; init; } = TimeSpan.FromSeconds(1);

    public TimeSpan MaxBreakDuration { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad option.</summary>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(FailureThreshold, 1, nameof(FailureThreshold));
        ArgumentOutOfRangeException.ThrowIfLessThan(BreakDuration, TimeSpan.FromMilliseconds(1), nameof(BreakDuration));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxBreakDuration, BreakDuration, nameof(MaxBreakDuration));
    }
}

/// <summary>
/// A consecutive-failure circuit breaker, the one owner of a remote dependency's health: after
/// <see cref="CircuitBreakerOptions.FailureThreshold"/> failures in a row it opens and callers fail fast; once the break
/// is over one probe call goes through (half-open): a success closes the circuit, a failure reopens it for twice as
/// long (up to the maximum). Any success resets the count. Thread-safe; every transition happens under one lock.
/// </summary>
public sealed class CircuitBreaker
{
    private readonly Lock _lock = new();
    private readonly CircuitBreakerOptions _options;
    private readonly TimeProvider _time;
    private CircuitState _state;
    private int _consecutiveFailures;
    private long _openedAt;
    private TimeSpan _break;
    private bool _probing;
    private long _opened;
    private long _rejected;
    private string? _lastFailure;

    public CircuitBreaker(CircuitBreakerOptions? options = null, TimeProvider? timeProvider = null)
    {
        _options = options ?? new CircuitBreakerOptions();
        _options.Validate();
        _time = timeProvider ?? TimeProvider.System;
        _break = _options.BreakDuration;
    }

    public CircuitState State
    {
        get
        {
            lock (_lock)
            {
                return _state == CircuitState.Open && BreakOver() ? CircuitState.HalfOpen : _state;
            }
        }
    }

    /// <summary>Failures since the last success.</summary>
    public int ConsecutiveFailures
    {
        get
        {
            lock (_lock)
            {
                return _consecutiveFailures;
            }
        }
    }

    /// <summary>Times the circuit opened (reopenings after a failed probe included).</summary>
    public long TimesOpened => Interlocked.Read(ref _opened);

    /// <summary>Calls refused because the circuit was open.</summary>
    public long Rejected => Interlocked.Read(ref _rejected);

    /// <summary>What the last failure was, for messages; null before any.</summary>
    public string? LastFailure
    {
        get
        {
            lock (_lock)
            {
                return _lastFailure;
            }
        }
    }

    /// <summary>How long until the next probe may go (zero unless open).</summary>
    public TimeSpan RetryIn
    {
        get
        {
            lock (_lock)
            {
                return _state == CircuitState.Open ? Max(TimeSpan.Zero, _break - _time.GetElapsedTime(_openedAt)) : TimeSpan.Zero;
            }
        }
    }

    /// <summary>
    /// Asks to make a call: false (fail fast) while open, or while half-open with a probe in flight. True with
    /// <paramref name="probe"/> set when this call is the half-open probe. Every admitted call must be followed by one
    /// <see cref="Exit"/> with the same <paramref name="probe"/>.
    /// </summary>
    public bool TryEnter(out bool probe)
    {
        lock (_lock)
        {
            probe = false;
            switch (_state)
            {
                case CircuitState.Closed:
                    return true;
                case CircuitState.Open when BreakOver():
                    _state = CircuitState.HalfOpen;
                    break;
                case CircuitState.Open:
                    Interlocked.Increment(ref _rejected);
                    return false;
            }

            if (_probing)
            {
                Interlocked.Increment(ref _rejected);
                return false;
            }

            _probing = true;
            probe = true;
            return true;
        }
    }

    /// <summary>Records how an admitted call ended (<paramref name="reason"/> describes a failure).</summary>
    public void Exit(bool probe, CallOutcome outcome, string? reason = null)
    {
        lock (_lock)
        {
            if (probe)
            {
                _probing = false;
            }

            switch (outcome)
            {
                case CallOutcome.Success:
                    _state = CircuitState.Closed;
                    _consecutiveFailures = 0;
                    _break = _options.BreakDuration;
                    break;
                case CallOutcome.Failure:
                    _lastFailure = reason ?? "failed";
                    _consecutiveFailures++;
                    if (probe && _state == CircuitState.HalfOpen)
                    {
                        // Still down: a longer break before the next probe.
                        _break = Min(_break * 2, _options.MaxBreakDuration);
                        Open();
                    }
                    else if (_state == CircuitState.Closed && _consecutiveFailures >= _options.FailureThreshold)
                    {
                        Open();
                    }

                    break;
                case CallOutcome.Neutral:
                default:
                    break;
            }
        }
    }

    private void Open()
    {
        _state = CircuitState.Open;
        _openedAt = _time.GetTimestamp();
        Interlocked.Increment(ref _opened);
    }

    private bool BreakOver() => _time.GetElapsedTime(_openedAt) >= _break;

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;
}
