namespace KvFetcher.Store.Shaping;

/// <summary>
/// A token bucket: tokens (bytes) accrue at the rate of a <see cref="BandwidthSchedule"/> up to <see cref="BurstBytes"/>,
/// and <see cref="WaitAsync"/> takes them, waiting while there are too few. The bucket starts empty, so the first
/// transfer is paced too. A request larger than the burst waits for a full bucket and leaves it in debt, so the long-run
/// rate holds for any request size. The rate can be changed while requests wait. Thread-safe.
/// </summary>
public sealed class TokenBucket
{
    /// <summary>The longest one wait sleeps before looking again (so a changed rate takes effect soon).</summary>
    private static readonly TimeSpan s_maxSleep = TimeSpan.FromMilliseconds(100);

    /// <summary>Timers count whole milliseconds: a shorter delay would end at once and spin on the same instant.</summary>
    private static readonly TimeSpan s_minSleep = TimeSpan.FromMilliseconds(1);

    /// <summary>Tokens are real numbers: a shortfall this small is rounding, not a reason to wait.</summary>
    private const double Tolerance = 1e-3;

    private readonly Lock _gate = new();
    private readonly TimeProvider _time;
    private BandwidthSchedule _schedule;
    private long _scheduleStart;
    private long _lastRefill;
    private double _tokens;
    private long _burst;
    private int _waiters;

    public TokenBucket(double bytesPerSecond, long burstBytes, TimeProvider? timeProvider = null)
        : this(BandwidthSchedule.Constant(bytesPerSecond), burstBytes, timeProvider)
    {
    }

    public TokenBucket(BandwidthSchedule schedule, long burstBytes, TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        ArgumentOutOfRangeException.ThrowIfLessThan(burstBytes, 1);
        _time = timeProvider ?? TimeProvider.System;
        _schedule = schedule;
        _burst = burstBytes;
        _scheduleStart = _lastRefill = _time.GetTimestamp();
    }

    /// <summary>The most tokens the bucket holds (at least 1). Lowering it drops tokens above the new size.</summary>
    public long BurstBytes
    {
        get => Volatile.Read(ref _burst);
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            lock (_gate)
            {
                Refill(_time.GetTimestamp());
                _burst = value;
                _tokens = Math.Min(_tokens, value);
            }
        }
    }

    /// <summary>The schedule in force. Setting it settles the tokens earned so far and starts the new one from now.</summary>
    public BandwidthSchedule Schedule
    {
        get
        {
            lock (_gate)
            {
                return _schedule;
            }
        }

        set
        {
            ArgumentNullException.ThrowIfNull(value);
            lock (_gate)
            {
                long now = _time.GetTimestamp();
                Refill(now);
                _schedule = value;
                _scheduleStart = now;
            }
        }
    }

    /// <summary>The current rate; setting it replaces the schedule with a constant one from now.</summary>
    public double BytesPerSecond
    {
        get
        {
            lock (_gate)
            {
                return _schedule.RateAt(_time.GetElapsedTime(_scheduleStart));
            }
        }

        set => Schedule = BandwidthSchedule.Constant(value);
    }

    /// <summary>Tokens available now (negative while a large request's debt is repaid).</summary>
    public double AvailableBytes
    {
        get
        {
            lock (_gate)
            {
                Refill(_time.GetTimestamp());
                return _tokens;
            }
        }
    }

    /// <summary>Requests sleeping for tokens right now (lets tests advance a fake clock only while someone waits).</summary>
    internal int Waiters => Volatile.Read(ref _waiters);

    /// <summary>Takes <paramref name="bytes"/> tokens, waiting until the bucket holds them (or is full, for more than a burst).</summary>
    public ValueTask WaitAsync(long bytes, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        cancellationToken.ThrowIfCancellationRequested();
        return TryTake(bytes, out TimeSpan wait) ? ValueTask.CompletedTask : WaitSlowAsync(bytes, wait, cancellationToken);
    }

    /// <summary>Takes the tokens when they are there; otherwise says how long until they will be.</summary>
    internal bool TryTake(long bytes, out TimeSpan wait)
    {
        lock (_gate)
        {
            long now = _time.GetTimestamp();
            Refill(now);
            double needed = Math.Min(bytes, _burst);
            if (_tokens >= needed - Tolerance)
            {
                _tokens -= bytes;
                wait = TimeSpan.Zero;
                return true;
            }

            wait = _schedule.TimeToCarry(_time.GetElapsedTime(_scheduleStart, now), needed - _tokens);
            wait = wait < s_minSleep ? s_minSleep : wait;
            return false;
        }
    }

    private async ValueTask WaitSlowAsync(long bytes, TimeSpan wait, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _waiters);
        try
        {
            do
            {
                await Task.Delay(wait < s_maxSleep ? wait : s_maxSleep, _time, cancellationToken);
            }
            while (!TryTake(bytes, out wait));
        }
        finally
        {
            Interlocked.Decrement(ref _waiters);
        }
    }

    private void Refill(long now)
    {
        TimeSpan from = _time.GetElapsedTime(_scheduleStart, _lastRefill);
        TimeSpan to = _time.GetElapsedTime(_scheduleStart, now);
        _tokens = Math.Min(_burst, _tokens + _schedule.BytesBetween(from, to));
        _lastRefill = now;
    }
}
