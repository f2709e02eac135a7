namespace KvFetcher.Fetch.Fetching;

/// <summary>A stage of a request's prefill.</summary>
public enum PrefillStage
{
    Lookup,
    Transfer,
    Decode,
    Restore,
    Compute,
}

/// <summary>One span of work: a stage on a chunk (-1 for the suffix or the whole request), from start to end since the request began.</summary>
public readonly record struct StageSpan(PrefillStage Stage, int Chunk, string? Variant, TimeSpan Start, TimeSpan End, long Bytes)
{
    public TimeSpan Duration => End - Start;
}

/// <summary>The spans of one request, recorded from several threads into a buffer sized up front.</summary>
internal sealed class Timeline(int capacity, long startTimestamp)
{
    private readonly StageSpan[] _spans = new StageSpan[capacity];
    private int _count;

    public long StartTimestamp { get; } = startTimestamp;

    public TimeSpan Now => System.Diagnostics.Stopwatch.GetElapsedTime(StartTimestamp);

    public void Add(PrefillStage stage, int chunk, string? variant, TimeSpan start, long bytes = 0)
    {
        int index = Interlocked.Increment(ref _count) - 1;
        if (index < _spans.Length)
        {
            _spans[index] = new StageSpan(stage, chunk, variant, start, Now, bytes);
        }
    }

    public StageSpan[] ToArray() => _spans.AsSpan(0, Math.Min(Volatile.Read(ref _count), _spans.Length)).ToArray();
}
