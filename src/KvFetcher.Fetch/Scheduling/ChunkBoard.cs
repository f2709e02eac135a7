namespace KvFetcher.Fetch.Scheduling;

/// <summary>
/// The chunk board of one request's stored prefix: each chunk's <see cref="ChunkState"/>, which variants of it are
/// stored, and where the engine is. It is the only place a chunk's state changes, and it changes only along the legal
/// transitions listed on <see cref="ChunkState"/> (anything else throws <see cref="InvalidOperationException"/>). Every
/// change is an event: <see cref="WaitForChangeAsync"/> completes on the next one, so nobody polls.
/// </summary>
internal sealed class ChunkBoard
{
    private readonly int[] _states;
    private readonly int[] _available;
    private readonly TimeProvider _time;
    private readonly Action? _onChange;
    private TaskCompletionSource? _changed;
    private int _version;
    private int _inFlight;
    private int _computeFrontier;
    private long _computeChunkStart;
    private bool _engineComputing;
    private bool _fetchEnded;

    /// <param name="chunks">Chunks of the stored prefix.</param>
    /// <param name="ladder">The variants the request may fetch, in ladder order.</param>
    /// <param name="available">Per chunk, a bit per ladder index that is stored.</param>
    /// <param name="time">The clock the engine's position is timed with.</param>
    /// <param name="changed">
    /// Called on every change besides waking <see cref="WaitForChangeAsync"/> (e.g. to wake an engine loop that serves many
    /// requests); it must be quick and must not throw.
    /// </param>
    public ChunkBoard(int chunks, IReadOnlyList<KvVariant> ladder, int[] available, TimeProvider? time = null, Action? changed = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(chunks);
        ArgumentNullException.ThrowIfNull(ladder);
        ArgumentNullException.ThrowIfNull(available);
        if (available.Length != chunks)
        {
            throw new ArgumentException($"The board has {chunks} chunks but {available.Length} availability masks.", nameof(available));
        }

        _states = new int[chunks];
        _available = available;
        Ladder = ladder;
        _time = time ?? TimeProvider.System;
        _onChange = changed;
        _computeChunkStart = _time.GetTimestamp();
    }

    public int Chunks => _states.Length;

    public IReadOnlyList<KvVariant> Ladder { get; }

    public TimeProvider Time => _time;

    /// <summary>Changes so far; pass it to <see cref="WaitForChangeAsync"/> to wait for the next one.</summary>
    public int Version => Volatile.Read(ref _version);

    /// <summary>Chunks the fetcher holds now (fetching or restoring).</summary>
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>The chunk the engine computes or waits for now (it has passed every chunk before it).</summary>
    public int ComputeFrontier => Volatile.Read(ref _computeFrontier);

    /// <summary>When the engine started on its current chunk (a timestamp of <see cref="Time"/>).</summary>
    public long ComputeChunkStart => Interlocked.Read(ref _computeChunkStart);

    /// <summary>Whether the engine is computing now (the fetcher's CPU stages then share the cores with it).</summary>
    public bool EngineComputing => Volatile.Read(ref _engineComputing);

    /// <summary>Whether the fetch side has stopped for good: after it, no chunk is fetching or restoring.</summary>
    public bool FetchEnded => Volatile.Read(ref _fetchEnded);

    public ChunkState StateOf(int chunk) => (ChunkState)Volatile.Read(ref _states[chunk]);

    /// <summary>Whether ladder variant <paramref name="ladderIndex"/> of <paramref name="chunk"/> is stored.</summary>
    public bool Has(int chunk, int ladderIndex) => (_available[chunk] & (1 << ladderIndex)) != 0;

    /// <summary>Whether a chunk may go from <paramref name="from"/> to <paramref name="to"/> (see <see cref="ChunkState"/>).</summary>
    public static bool IsLegal(ChunkState from, ChunkState to) => (from, to) switch
    {
        (ChunkState.Pending, ChunkState.Fetching or ChunkState.Failed or ChunkState.Computing) => true,
        (ChunkState.Fetching, ChunkState.Restoring or ChunkState.Failed or ChunkState.Computing) => true,
        (ChunkState.Restoring, ChunkState.Filled or ChunkState.Failed) => true,
        (ChunkState.Failed, ChunkState.Computing) => true,
        (ChunkState.Computing, ChunkState.Filled) => true,
        _ => false,
    };

    /// <summary>
    /// Moves <paramref name="chunk"/> from <paramref name="from"/> to <paramref name="to"/> if it is in
    /// <paramref name="from"/> now; false if someone else moved it first. Throws if the transition is not legal.
    /// </summary>
    public bool TryMove(int chunk, ChunkState from, ChunkState to)
    {
        if (!IsLegal(from, to))
        {
            throw new InvalidOperationException($"Chunk {chunk} cannot go from {from} to {to}.");
        }

        if (Interlocked.CompareExchange(ref _states[chunk], (int)to, (int)from) != (int)from)
        {
            return false;
        }

        bool heldBefore = from is ChunkState.Fetching or ChunkState.Restoring;
        bool heldAfter = to is ChunkState.Fetching or ChunkState.Restoring;
        if (heldBefore != heldAfter)
        {
            Interlocked.Add(ref _inFlight, heldAfter ? 1 : -1);
        }

        Changed();
        return true;
    }

    /// <summary>Moves a chunk its owner holds (e.g. Computing to Filled); throws if it is not in <paramref name="from"/>.</summary>
    public void Move(int chunk, ChunkState from, ChunkState to)
    {
        if (!TryMove(chunk, from, to))
        {
            throw new InvalidOperationException($"Chunk {chunk} was to go from {from} to {to} but is {StateOf(chunk)}.");
        }
    }

    /// <summary>The engine moved on to <paramref name="chunk"/>.</summary>
    public void SetComputeFrontier(int chunk)
    {
        Interlocked.Exchange(ref _computeChunkStart, _time.GetTimestamp());
        Volatile.Write(ref _computeFrontier, chunk);
    }

    /// <summary>The engine starts or stops computing.</summary>
    public void SetEngineComputing(bool computing) => Volatile.Write(ref _engineComputing, computing);

    /// <summary>The fetch side has stopped (every chunk it held is settled); wakes whoever waits.</summary>
    public void EndFetch()
    {
        Volatile.Write(ref _fetchEnded, true);
        Changed();
    }

    /// <summary>
    /// Wakes whoever waits without a chunk changing: a party's plans changed (e.g. the fetcher stopped claiming, so a
    /// chunk left to it will not come).
    /// </summary>
    public void Wake() => Changed();

    /// <summary>
    /// Completes once the board has changed since <paramref name="version"/> (at once if it has), or after
    /// <paramref name="timeout"/> (<see cref="Timeout.InfiniteTimeSpan"/>: no limit); true when it changed.
    /// </summary>
    public async Task<bool> WaitForChangeAsync(int version, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        Task changed = WhenChangedSince(version);
        if (changed.IsCompleted)
        {
            return true;
        }

        if (timeout == Timeout.InfiniteTimeSpan)
        {
            await changed.WaitAsync(cancellationToken).ConfigureAwait(false);
            return true;
        }

        try
        {
            await changed.WaitAsync(timeout > TimeSpan.Zero ? timeout : TimeSpan.Zero, _time, cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }

    private Task WhenChangedSince(int version)
    {
        TaskCompletionSource? changed = Volatile.Read(ref _changed);
        if (changed is null)
        {
            var fresh = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            changed = Interlocked.CompareExchange(ref _changed, fresh, null) ?? fresh;
        }

        // A change between reading the version and installing the source: it has happened already.
        return Volatile.Read(ref _version) != version ? Task.CompletedTask : changed.Task;
    }

    private void Changed()
    {
        Interlocked.Increment(ref _version);
        Interlocked.Exchange(ref _changed, null)?.TrySetResult();
        _onChange?.Invoke();
    }
}
