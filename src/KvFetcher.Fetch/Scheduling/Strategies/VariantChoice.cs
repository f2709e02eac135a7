using KvFetcher.Fetch.Calibration;
using KvFetcher.Fetch.Fetching;

namespace KvFetcher.Fetch.Scheduling.Strategies;

/// <summary>What the variant choice reads: how much predicted time a more accurate variant may cost, and the decoders.</summary>
/// <param name="QualitySlack">How much predicted time is given up for a more accurate variant (0.05 = 5%).</param>
/// <param name="LosslessOnly">Only lossless variants may be fetched.</param>
/// <param name="DecodeWorkers">Decode workers per request (decode time per chunk divides among them).</param>
/// <param name="Floor">The accuracy floor's verdicts for the model: only variants it allows may be fetched (null: no floor).</param>
internal sealed record VariantChoiceOptions(double QualitySlack, bool LosslessOnly, int DecodeWorkers, FloorDecision? Floor = null);

/// <summary>
/// The one definition of a chunk's predicted fetch cost and of the variant-choice rule, used by every strategy that picks
/// among stored variants. Cost: a chunk in a pipeline takes the slowest of its transfer, its decode spread over the
/// decode workers, and its restore. Rule: among the variants the request may fetch, the most accurate one whose score
/// (lower is better) is within the quality slack of the best score; the lower score breaks ties in accuracy.
/// </summary>
internal sealed class VariantChoice(FetchRates rates, int chunkBytes, VariantChoiceOptions options)
{
    public VariantChoiceOptions Options => options;

    /// <summary>
    /// Predicted seconds per chunk of <paramref name="variant"/> in a full pipeline, and the decode and restore seconds
    /// of one chunk (the latency a pipeline adds), with the engine computing alongside or not.
    /// </summary>
    public (double PerChunk, double Decode, double Restore) Cost(KvVariant variant, bool engineBusy)
    {
        (double transfer, double decode, double restore) = rates.ChunkSeconds(variant, chunkBytes, engineBusy);
        return (Math.Max(transfer, Math.Max(decode / options.DecodeWorkers, restore)), decode, restore);
    }

    /// <summary>
    /// Whether the request may fetch ladder variant <paramref name="ladderIndex"/> of <paramref name="chunk"/>: stored,
    /// lossless if only lossless ones may be, and within the accuracy floor.
    /// </summary>
    public bool MayFetch(ChunkBoard board, int chunk, int ladderIndex) =>
        board.Has(chunk, ladderIndex) && (!options.LosslessOnly || board.Ladder[ladderIndex].IsLossless) &&
        (options.Floor is null || options.Floor.Allows(board.Ladder[ladderIndex]));

    /// <summary>
    /// The rule: the ladder index of the most accurate variant whose <paramref name="scores"/> entry is within the slack
    /// of the lowest (NaN = may not be fetched); -1 when none may be.
    /// </summary>
    public int MostAccurateWithinSlack(IReadOnlyList<KvVariant> ladder, ReadOnlySpan<double> scores)
    {
        double lowest = double.MaxValue;
        foreach (double score in scores)
        {
            if (!double.IsNaN(score) && score < lowest)
            {
                lowest = score;
            }
        }

        int best = -1;
        for (int v = 0; v < scores.Length; v++)
        {
            if (!double.IsNaN(scores[v]) && scores[v] <= lowest * (1 + options.QualitySlack) &&
                (best < 0 || ladder[v].Rank > ladder[best].Rank || (ladder[v].Rank == ladder[best].Rank && scores[v] < scores[best])))
            {
                best = v;
            }
        }

        return best;
    }

    /// <summary>
    /// The variant a whole pipeline of <paramref name="board"/>'s chunks is predicted to be fetched as, by the rule over
    /// each variant's pipelined cost among those the request may fetch of the first chunk (and <paramref name="eligible"/>
    /// allows), with its seconds per chunk and one chunk's decode plus restore (the latency a pipeline adds); variant -1,
    /// an infinite cost and no latency when none may be fetched.
    /// </summary>
    public (int Variant, double PerChunk, double Latency) Pipeline(ChunkBoard board, bool engineBusy, Func<KvVariant, bool>? eligible = null)
    {
        Span<double> cost = stackalloc double[board.Ladder.Count];
        for (int v = 0; v < cost.Length; v++)
        {
            cost[v] = MayFetch(board, 0, v) && (eligible is null || eligible(board.Ladder[v])) ? Cost(board.Ladder[v], engineBusy).PerChunk : double.NaN;
        }

        int best = MostAccurateWithinSlack(board.Ladder, cost);
        if (best < 0)
        {
            return (-1, double.PositiveInfinity, 0);
        }

        (double perChunk, double decode, double restore) = Cost(board.Ladder[best], engineBusy);
        return (best, perChunk, decode + restore);
    }

    /// <summary>
    /// For a request that only fetches: the ladder index to fetch <paramref name="chunk"/> as, by the rule over each
    /// variant's pipelined cost; 0 when none may be fetched (the strategy then finds it not stored and marks it failed).
    /// </summary>
    public int Fastest(ChunkBoard board, int chunk)
    {
        Span<double> cost = stackalloc double[board.Ladder.Count];
        for (int v = 0; v < cost.Length; v++)
        {
            cost[v] = MayFetch(board, chunk, v) ? Cost(board.Ladder[v], engineBusy: false).PerChunk : double.NaN;
        }

        return Math.Max(MostAccurateWithinSlack(board.Ladder, cost), 0);
    }
}
