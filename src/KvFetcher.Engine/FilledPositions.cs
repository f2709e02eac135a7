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

    // Positions filled in two layer ranges (the lower layers computed, the upper ones imported): per position, layers
    // [0, _lower) and [_upperFrom, layers) hold values. Allocated on the first such fill.
    private int[]? _lower;
    private int[]? _upperFrom;

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
            if (_lower is not null)
            {
                Array.Clear(_lower, length, Capacity - length);
                Array.Clear(_upperFrom!, length, Capacity - length);
            }
        }
    }

    /// <summary>Marks [start, end) filled and extends <see cref="Length"/> over any now-contiguous prefix.</summary>
    public void MarkFilled(int start, int end)
    {
        CheckRange(start, end);
        lock (_lock)
        {
            FillLocked(start, end);
        }
    }

    private void FillLocked(int start, int end)
    {
        _filled.AsSpan(start, end - start).Fill(true);
        int length = _length;
        while (length < Capacity && _filled[length])
        {
            length++;
        }

        _length = length;
    }

    /// <summary>
    /// Records that layers [<paramref name="layerStart"/>, <paramref name="layerEnd"/>) of positions [start, end) hold
    /// values, in a cache of <paramref name="layers"/> layers: the lower layers (from 0, computed) or the upper ones (to
    /// the last, imported). A position whose lower and upper layers meet is filled (<see cref="MarkFilled"/>); returns
    /// whether all of [start, end) now are.
    /// </summary>
    public bool MarkLayers(int start, int end, int layerStart, int layerEnd, int layers)
    {
        CheckRange(start, end);
        if (layerStart < 0 || layerEnd > layers || layerStart >= layerEnd || (layerStart != 0 && layerEnd != layers))
        {
            throw new ArgumentOutOfRangeException(nameof(layerStart), $"Layers [{layerStart}, {layerEnd}) of {layers} are neither the lower nor the upper layers.");
        }

        lock (_lock)
        {
            _lower ??= new int[Capacity];
            _upperFrom ??= new int[Capacity];
            bool all = true;
            for (int position = start; position < end; position++)
            {
                if (_upperFrom[position] == 0)
                {
                    _upperFrom[position] = layers; // no upper layer yet (0 is "never touched")
                }

                if (layerStart == 0)
                {
                    _lower[position] = Math.Max(_lower[position], layerEnd);
                }

                if (layerEnd == layers)
                {
                    _upperFrom[position] = Math.Min(_upperFrom[position], layerStart);
                }

                all &= _filled[position] || _lower[position] >= _upperFrom[position];
            }

            if (all)
            {
                FillLocked(start, end);
            }

            return all;
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
