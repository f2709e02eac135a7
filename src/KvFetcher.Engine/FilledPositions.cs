namespace KvFetcher.Engine;

/// <summary>
/// Which positions of a KV cache hold values, and the longest filled prefix: the bookkeeping every cache (host or
/// device) shares. Thread-safe: a fetcher may mark one range while the engine marks another; the lock also publishes
/// the range's values to the thread that next observes it filled. Part of the engine backend surface: an engine's cache
/// derives from <see cref="KvCacheBase"/>, which keeps one of these.
/// </summary>
public sealed class FilledPositions
{
    private readonly bool[] _filled;
    private readonly Lock _lock = new();
    private volatile int _length;

    /// <summary>Creates the bookkeeping of <paramref name="capacity"/> positions, none filled.</summary>
    public FilledPositions(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _filled = new bool[capacity];
    }

    /// <summary>The number of positions.</summary>
    public int Capacity => _filled.Length;

    /// <summary>The number of positions [0, n) that are all filled.</summary>
    public int Length => _length;

    /// <summary>Whether <paramref name="position"/> is filled (false outside [0, <see cref="Capacity"/>)).</summary>
    public bool IsFilled(int position) => (uint)position < (uint)Capacity && Volatile.Read(ref _filled[position]);

    /// <summary>Forgets every position at or after <paramref name="length"/>.</summary>
    public void Truncate(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, Capacity);
        lock (_lock)
        {
            Array.Clear(_filled, length, Capacity - length);
            _length = Math.Min(_length, length);
        }
    }

    /// <summary>Marks [start, end) filled and extends <see cref="Length"/> over any now-contiguous prefix.</summary>
    public void MarkFilled(int start, int end)
    {
        CheckRange(start, end);
        lock (_lock)
        {
            _filled.AsSpan(start, end - start).Fill(true);
            int length = _length;
            while (length < Capacity && _filled[length])
            {
                length++;
            }

            _length = length;
        }
    }

    /// <summary>Throws unless [start, end) is a non-empty range inside the cache.</summary>
    public void CheckRange(int start, int end)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(end, Capacity);
        if (start >= end)
        {
            throw new ArgumentOutOfRangeException(nameof(end), end, $"The token range [{start}, {end}) is empty.");
        }
    }

    /// <summary>Throws <see cref="InvalidOperationException"/> naming the first position of [start, end) that is not filled.</summary>
    public void CheckFilled(int start, int end)
    {
        for (int position = start; position < end; position++)
        {
            if (!IsFilled(position))
            {
                throw new InvalidOperationException($"Position {position} of the KV cache is not filled; export needs [{start}, {end}) filled.");
            }
        }
    }
}
