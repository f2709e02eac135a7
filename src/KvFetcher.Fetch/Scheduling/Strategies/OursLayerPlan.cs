using KvFetcher.Codecs;
using KvFetcher.Fetch.Fetching;

namespace KvFetcher.Fetch.Scheduling.Strategies;

/// <summary>
/// ours-layer's choice, made once per request from the measured rates: ours' plan (<see cref="AdaptiveStrategy"/>: a
/// token-wise meeting point, any variant of the ladder the request may fetch, lossy ones within the accuracy floor
/// included) or a layer split (<see cref="LayerSplitStrategy"/>: the meeting chunk split by layers, fetched from a lossless,
/// layer-addressable variant). Both are predicted in the one fluid model of <see cref="LayerSplit.Best"/> with the
/// pipelined costs of <see cref="VariantChoice.Pipeline"/>. The split is taken only where its prediction beats ours' by
/// more than its pipeline latency (the split chunk is one more partial transfer, decode and restore), as
/// <see cref="LayerSplit.Best"/> requires against token-wise points; so ours-layer is ours plus the option of a layer
/// split, and where a lossy variant is the better fetch it fetches as ours does.
/// </summary>
/// <param name="Ours">Ours' predicted meeting point (token-wise: <see cref="LayerSplit.Layers"/> = 0).</param>
/// <param name="OursVariant">The ladder index ours' prediction fetches as; -1 when none may be fetched.</param>
/// <param name="Split">The best predicted meeting point with a lossless, layer-addressable variant (it may be token-wise).</param>
/// <param name="SplitVariant">The ladder index of that variant; -1 when none may be fetched.</param>
/// <param name="SplitLatency">One chunk's decode and restore seconds as <paramref name="SplitVariant"/>.</param>
internal sealed record OursLayerPlan(LayerSplit Ours, int OursVariant, LayerSplit Split, int SplitVariant, double SplitLatency)
{
    /// <summary>Whether the layer split is taken: it splits a chunk and beats ours' prediction by more than its latency.</summary>
    public bool SplitsByLayers => SplitVariant >= 0 && Split.Layers > 0 && Split.PredictedSeconds + SplitLatency < Ours.PredictedSeconds;

    /// <summary>
    /// Predicts both plans for <paramref name="board"/>'s chunks of <paramref name="modelLayers"/> layers.
    /// <paramref name="groupLayers"/>: layers per group of the stored containers, 0 when layer ranges cannot be read (then
    /// no chunk is split). <paramref name="sharedCores"/>: the engine computes on the host's cores, so the fetcher's decode
    /// and restore slow it (see <see cref="LayerSplit.Best"/>).
    /// </summary>
    public static OursLayerPlan Predict(ChunkBoard board, FetchRates rates, VariantChoice choice, int chunkTokens, int modelLayers, int groupLayers, bool sharedCores)
    {
        double Compute(int chunk) => rates.ComputeSeconds(chunk, chunkTokens);

        (int oursVariant, double perChunk, double latency) = choice.Pipeline(board, engineBusy: sharedCores);
        LayerSplit ours = LayerSplit.Best(board.Chunks, modelLayers, groupLayers: 0, Compute, perChunk, latency, hostWork: sharedCores ? latency : 0);

        (int splitVariant, double splitPerChunk, double splitLatency) = choice.Pipeline(board, engineBusy: sharedCores, IsLayerAddressableLossless);
        LayerSplit split = splitVariant < 0
            ? new LayerSplit(board.Chunks, 0, double.MaxValue)
            : LayerSplit.Best(board.Chunks, modelLayers, groupLayers, Compute, splitPerChunk, splitLatency, hostWork: sharedCores ? splitLatency : 0);
        return new OursLayerPlan(ours, oursVariant, split, splitVariant, splitLatency);
    }

    /// <summary>The strategy that follows the plan taken.</summary>
    public ChunkStrategy CreateStrategy(ChunkBoard board, FetchRates rates, VariantChoice choice, int chunkTokens, bool sharedCores) =>
        SplitsByLayers ? new LayerSplitStrategy(board, Split, SplitVariant) : new AdaptiveStrategy(board, rates, choice, chunkTokens, sharedCores);

    /// <summary>Whether a layer range of <paramref name="variant"/> can be read and restores bit-identical KV.</summary>
    public static bool IsLayerAddressableLossless(KvVariant variant) => variant.GetCodec() is ILayerAddressableCodec && variant.IsLossless;
}
