using KvFetcher.Core;
using KvFetcher.Cuda.Reuse;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Store;
using KvFetcher.Store.Disk;

namespace KvFetcher.Cuda.Tests;

/// <summary>
/// Checks of remote KV reuse (<see cref="KvReuse"/>) on the CUDA engine with the GPU restorer, written once for the
/// xunit tests and the device runner, as <see cref="GpuChecks"/>.
/// </summary>
internal static class GpuReuseChecks
{
    private const int ChunkTokens = 64;
    private const int Steps = 24;

    /// <summary>
    /// <c>ours-layer</c> through <see cref="KvReuse"/> on the CUDA engine, with a lossless ladder (raw, exact) in a disk
    /// store and the <see cref="GpuChunkRestorer"/>: the bundled prompt's four 64-token chunks are stored by a first
    /// prefill; then, with rates that make a layer split the fastest meeting point (a chunk computes in 1 s and arrives
    /// in 2/3 s, as the CPU suite's test sets them), a second prefill splits chunk 1 by layers (the engine computes its
    /// lower layers, the fetcher restores its upper layers and chunks 2 and 3). Its first token and the greedy
    /// continuation after it must be those of a full prefill on the GPU, and the split must have happened.
    /// </summary>
    public static CheckResult OursLayerReuse(DType storage) => Task.Run(() => OursLayerReuseAsync(storage)).GetAwaiter().GetResult();

    private static async Task<CheckResult> OursLayerReuseAsync(DType storage)
    {
        CudaLanguageModel model = GpuModels.Get("bundled", CudaMatmulPrecision.StoredSplit, storage);
        int[] prompt = GpuChecks.BundledPrompt(300);
        string label = $"ours-layer reuse {storage.ToShortName()} KV";

        using CudaSession full = model.CreateSession(prompt.Length + Steps);
        int[] expected = Continue(full, prompt.Length, full.PrefillGreedy(prompt, 0));

        string directory = Directory.CreateTempSubdirectory("kvf-gpu-layer-").FullName;
        try
        {
            await using IKvStore store = DiskKvStore.Open(new DiskKvStoreOptions { Directory = directory, Fsync = false });
            var options = new ReuseOptions { ChunkTokens = ChunkTokens, Ladder = [KvVariant.Raw, KvVariant.Exact], LosslessOnly = true, LayerGroup = 1 };
            await using var reuse = new KvReuse(model, store, options, restorer: new GpuChunkRestorer(model, pool: null));
            PrefillReport warm = await reuse.WarmAsync(prompt).ConfigureAwait(false);
            ContextPlan plan = reuse.Plan(prompt);
            reuse.Rates.SetBandwidth(plan.ChunkBytes / (2.0 / 3));
            for (int i = 0; i < 40; i++)
            {
                reuse.Rates.ObserveCompute(i % plan.ReusableChunks, 1.0);
            }

            using CudaSession session = model.CreateSession(prompt.Length + Steps);
            var logits = new float[model.Config.VocabSize];
            PrefillReport report = await reuse.PrefillAsync(session, prompt, PrefillStrategy.LayerSplit, logits, publish: false).ConfigureAwait(false);
            int[] actual = Continue(session, prompt.Length, report.FirstToken);
            int agree = expected.Zip(actual).TakeWhile(p => p.First == p.Second).Count();
            bool split = report.SplitChunk >= 0 && report.SplitLayers > 0;
            bool complete = report.FailedChunks == 0 && report.StoredChunks == plan.ReusableChunks && report.RestoredChunks > 0;
            return new CheckResult(
                label,
                split && complete && agree == Steps,
                $"{prompt.Length} tokens, {plan.ReusableChunks} stored chunks ({warm.StoredChunks} before warming, {reuse.Publisher.Published} containers stored), restorer {reuse.Restorer.Name}: " +
                $"chunk {report.SplitChunk} split at {report.SplitLayers}/{model.Config.NumLayers} layers{(split ? "" : " (NO SPLIT)")}, {report.RestoredChunks} restored, {report.FailedChunks} failed, {report.TakenBackChunks} taken back, " +
                $"{report.ReusedTokens} tokens reused; greedy equals full prefill for {agree}/{Steps} tokens");
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary><paramref name="first"/> then greedy decode steps from <paramref name="position"/>: <see cref="Steps"/> tokens in all.</summary>
    private static int[] Continue(CudaSession session, int position, int first)
    {
        var result = new int[Steps];
        result[0] = first;
        for (int i = 1; i < Steps; i++)
        {
            result[i] = session.DecodeGreedy(result[i - 1], position + i - 1);
        }

        return result;
    }
}
