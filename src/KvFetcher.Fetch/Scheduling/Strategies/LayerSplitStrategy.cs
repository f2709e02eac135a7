namespace KvFetcher.Fetch.Scheduling.Strategies;

/// <summary>
/// Where ours-layer meets: the engine computes chunks [0, <see cref="Chunk"/>) and the lower <see cref="Layers"/> layers of
/// chunk <see cref="Chunk"/>; the fetcher brings that chunk's upper layers and every chunk after it. <see cref="Layers"/> = 0:
/// the chunk is fetched whole (a token-only meeting point).
/// </summary>
internal readonly record struct LayerSplit(int Chunk, int Layers, double PredictedSeconds)
{
    /// <summary>
    /// The split of <paramref name="chunks"/> chunks of <paramref name="modelLayers"/> layers with the lowest predicted
    /// time to meet, in the fluid model: the engine takes <paramref name="compute"/>(i) per chunk i, spread evenly over the
    /// layers; the fetcher <paramref name="perChunk"/> per chunk in a full pipeline (a layer range costs its share) plus
    /// <paramref name="latency"/> once (the last chunk's decode and restore). Splits fall on multiples of
    /// <paramref name="groupLayers"/> (0: no layer split, token-only meeting points). <paramref name="hostWork"/> is the
    /// CPU time per fetched chunk (decode and restore) that an engine computing on the same cores loses while it
    /// computes beside the fetcher (0 for a GPU engine): the two sides are then not independent, and an overlap that only
    /// shaves the pipeline's own CPU stages does not pay. A split is taken only where it beats the best token-wise meeting
    /// point by more than <paramref name="latency"/>: the split chunk is one more partial transfer, decode and restore,
    /// and a predicted gain smaller than one chunk's pipeline stages is within what the prediction cannot see.
    /// </summary>
    public static LayerSplit Best(int chunks, int modelLayers, int groupLayers, Func<int, double> compute, double perChunk, double latency, double hostWork = 0)
    {
        var best = new LayerSplit(chunks, 0, double.MaxValue);
        var bestSplit = new LayerSplit(chunks, 0, double.MaxValue);
        double engine = 0;
        for (int m = 0; m <= chunks; m++)
        {
            double chunkCompute = m < chunks ? compute(m) : 0;
            int lastSplit = m < chunks && groupLayers > 0 ? modelLayers - 1 : 0;
            for (int k = 0; k <= lastSplit; k += Math.Max(1, groupLayers))
            {
                double fetched = m < chunks ? chunks - m - ((double)k / modelLayers) : 0;
                double computed = engine + (chunkCompute * k / modelLayers);
                double engineTime = computed > 0 ? computed + (fetched * hostWork) : 0;
                double fetchTime = fetched > 0 ? (fetched * perChunk) + latency : 0;
                double meet = Math.Max(engineTime, fetchTime);
                if (k == 0 && meet < best.PredictedSeconds)
                {
                    best = new LayerSplit(m, k, meet);
                }
                else if (k > 0 && meet < bestSplit.PredictedSeconds)
                {
                    bestSplit = new LayerSplit(m, k, meet);
                }
            }

            engine += chunkCompute;
        }

        return bestSplit.PredictedSeconds + latency < best.PredictedSeconds ? bestSplit : best;
    }
}

/// <summary>
/// ours-layer's layer split (<c>layer-split</c>), taken where <see cref="OursLayerPlan"/> predicts it beats ours' plan: the
/// meeting point, predicted once from the measured compute, bandwidth, decode and restore rates
/// (<see cref="LayerSplit.Best"/>), is a chunk and a layer split of it: the engine computes the chunks before it and the
/// chunk's lower layers, while the fetcher brings the chunks after it and the chunk's upper layers (a layer-range read of a
/// layer-addressable container: raw or exact). Only that one lossless, layer-addressable variant is fetched. Engine side:
/// every chunk before the meeting chunk is computed; at the meeting chunk the engine computes the lower layers
/// (<see cref="SplitLayersOf"/>), then waits for the fetcher; it waits for the chunks after it too, until the fetcher is
/// clearly later than predicted (twice the prediction, at least 0.1 s), then takes back everything not delivered and
/// computes it in one pass.
/// </summary>
internal sealed class LayerSplitStrategy : MeetInMiddleStrategy
{
    private const double MinPatienceSeconds = 0.1;
    private readonly int _variant;
    private readonly double _patienceSeconds;
    private long _waitingSince;
    private int _waitingFor = -1;

    /// <param name="board">The request's chunk board.</param>
    /// <param name="split">The predicted meeting point.</param>
    /// <param name="variant">The ladder index of the lossless, layer-addressable variant fetched.</param>
    public LayerSplitStrategy(ChunkBoard board, LayerSplit split, int variant)
        : base(board)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(variant);
        Split = split;
        _variant = variant;
        _patienceSeconds = Math.Max(MinPatienceSeconds, 2 * split.PredictedSeconds);
    }

    /// <summary>The predicted meeting point.</summary>
    public LayerSplit Split { get; }

    /// <summary>The engine leaves the meeting chunk and everything after it to the fetcher.</summary>
    public override int EngineWaitingFor => Split.Chunk < Board.Chunks ? Split.Chunk : -1;

    public override int SplitLayersOf(int chunk) => chunk == Split.Chunk ? Split.Layers : 0;

    public override int LayerStartOf(int chunk) => SplitLayersOf(chunk);

    public override string Plan => "layer-split";

    protected override int Choose(int chunk, int inFlight) => chunk >= Split.Chunk ? _variant : -1;

    protected override EngineMove DecideOpen(int chunk, ChunkState state, FetchProgress fetch, out TimeSpan recheck)
    {
        recheck = Timeout.InfiniteTimeSpan;
        if (chunk < Split.Chunk || (state == ChunkState.Pending && (IsStopped || fetch.Ended)))
        {
            return EngineMove.Compute;
        }

        if (_waitingFor != chunk)
        {
            _waitingFor = chunk;
            _waitingSince = Board.Time.GetTimestamp();
        }

        TimeSpan left = TimeSpan.FromSeconds(_patienceSeconds) - Board.Time.GetElapsedTime(_waitingSince);
        if (left <= TimeSpan.Zero)
        {
            return EngineMove.TakeBackRest;
        }

        recheck = left;
        return EngineMove.Wait;
    }
}
