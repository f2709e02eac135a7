using KvFetcher.Core;

namespace KvFetcher.Engine.Tests;

/// <summary>
/// Chunked prefill, KV export and out-of-order import give exactly what a one-shot prefill gives: the engine's
/// reductions run in an order that does not depend on the chunking, so the comparisons are bit-exact.
/// </summary>
public sealed class ChunkedPrefillTests : IClassFixture<ChunkedPrefillTests.BundledModel>
{
    private readonly LanguageModel _model;
    private readonly int[] _prompt;

    public ChunkedPrefillTests(BundledModel bundled)
    {
        _model = bundled.Model;
        _prompt = bundled.Prompt;
    }

    public static TheoryData<int[]> Chunkings => new()
    {
        new[] { 1 },
        new[] { 7 },
        new[] { 256 },
        new[] { 100, 3, 129, 1, 64 },
    };

    [Theory]
    [MemberData(nameof(Chunkings))]
    public void Prefill_AnyChunking_SameLogitsAndKvAsOneShot(int[] pattern)
    {
        int vocab = _model.Config.VocabSize;
        int n = _prompt.Length;
        InferenceSession oneShot = _model.CreateSession(n);
        var expected = new float[n * vocab];
        oneShot.PrefillAllLogits(_prompt, 0, expected);

        InferenceSession chunked = _model.CreateSession(n);
        var actual = new float[n * vocab];
        int start = 0;
        for (int c = 0; start < n; c++)
        {
            int size = Math.Min(pattern[c % pattern.Length], n - start);
            chunked.PrefillAllLogits(_prompt.AsSpan(start, size), start, actual.AsSpan(start * vocab, size * vocab));
            start += size;
        }

        Assert.True(expected.AsSpan().SequenceEqual(actual), $"logits differ; max |diff| {MaxDifference(expected, actual):E3}");
        AssertSameKv(oneShot.Cache, chunked.Cache, n);
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.Float16)]
    [InlineData(DType.BFloat16)]
    public void ImportReversedChunks_ThenContinue_SameGreedyOutputAsFullPrefill(DType storage)
    {
        using var model = LanguageModel.Open(TestData.BundledModel, new LanguageModelOptions { KvStorageDType = storage });
        const int ChunkTokens = 64;
        int prefix = _prompt.Length - 5;
        prefix -= prefix % ChunkTokens;
        int steps = 24;
        int[] expected = Generate(model.CreateSession(_prompt.Length + steps), 0, steps);

        // Compute the prefix once, export it in the storage dtype, import it chunk by chunk from the back.
        InferenceSession producer = model.CreateSession(_prompt.Length);
        producer.Prefill(_prompt.AsSpan(0, prefix), 0, new float[model.Config.VocabSize]);
        InferenceSession consumer = model.CreateSession(_prompt.Length + steps);
        for (int start = prefix - ChunkTokens; start >= 0; start -= ChunkTokens)
        {
            var bytes = new byte[producer.Cache.GetExportByteCount(ChunkTokens, storage)];
            producer.Cache.Export(start, start + ChunkTokens, storage, bytes);
            consumer.Cache.Import(start, start + ChunkTokens, storage, bytes);
        }

        Assert.Equal(prefix, consumer.Cache.Length);
        AssertSameKv(producer.Cache, consumer.Cache, prefix);
        int[] actual = Generate(consumer, prefix, steps);
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void Prefill_ManyInternalSteps_SameLastLogitsKvAndGreedyOutputAsOneStep()
    {
        // The session computes logits only on a prefill's last internal step; the earlier steps only fill the cache.
        using var stepped = LanguageModel.Open(TestData.BundledModel, new LanguageModelOptions { MaxStepTokens = 16 });
        int n = _prompt.Length;
        const int Steps = 16;
        InferenceSession oneStep = _model.CreateSession(n + Steps);
        InferenceSession manySteps = stepped.CreateSession(n + Steps);
        Assert.True(manySteps.StepTokens < n && oneStep.StepTokens >= n);
        var expected = new float[_model.Config.VocabSize];
        var actual = new float[_model.Config.VocabSize];

        oneStep.Prefill(_prompt, 0, expected);
        manySteps.Prefill(_prompt, 0, actual);

        Assert.True(expected.AsSpan().SequenceEqual(actual), $"last logits differ; max |diff| {MaxDifference(expected, actual):E3}");
        AssertSameKv(oneStep.Cache, manySteps.Cache, n);
        for (int i = 0; i < Steps; i++)
        {
            int next = KvFetcher.Engine.Cpu.Kernels.ArgMax(expected);
            Assert.Equal(next, KvFetcher.Engine.Cpu.Kernels.ArgMax(actual));
            oneStep.Decode(next, n + i, expected);
            manySteps.Decode(next, n + i, actual);
        }
    }

    [Fact]
    public void Forward_EmptyLogits_FillsTheCacheWithoutTheLmHead()
    {
        KvCache cache = _model.CreateCache(32);
        var scratch = new KvFetcher.Engine.Cpu.ForwardScratch(_model.Config, 32);

        _model.Transformer.Forward(_prompt.AsSpan(0, 8), 0, cache, scratch, [], allLogits: false);

        Assert.Equal(8, cache.Length);
    }

    [Fact]
    public void Prefill_WithGapInCache_Throws()
    {
        InferenceSession session = _model.CreateSession(64);
        InvalidOperationException ex = Assert.Throws<InvalidOperationException>(() => session.Prefill(_prompt.AsSpan(0, 4), 8, new float[_model.Config.VocabSize]));
        Assert.Contains("[0, 8)", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Decode_SteadyState_AllocatesNothing()
    {
        // A pool of its own, so that the workers' share counts only this model's steps.
        using var model = LanguageModel.Open(TestData.BundledModel, new LanguageModelOptions { Threads = 2 });
        InferenceSession session = model.CreateSession(128);
        var logits = new float[model.Config.VocabSize];
        session.Prefill(_prompt.AsSpan(0, 16), 0, logits);
        int position = 16;
        session.Decode(5, position++, logits);
        session.Decode(6, position++, logits);
        long before = GC.GetAllocatedBytesForCurrentThread();
        long workersBefore = model.Pool.WorkerAllocatedBytes;
        for (int end = position + 30; position < end; position++)
        {
            session.Decode(7, position, logits);
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(0, model.Pool.WorkerAllocatedBytes - workersBefore);
    }

    private int[] Generate(InferenceSession session, int computedFrom, int steps)
    {
        var logits = new float[session.VocabSize];
        session.Prefill(_prompt.AsSpan(computedFrom), computedFrom, logits);
        var result = new int[steps];
        for (int i = 0; i < steps; i++)
        {
            result[i] = KvFetcher.Engine.Cpu.Kernels.ArgMax(logits);
            session.Decode(result[i], _prompt.Length + i, logits);
        }

        return result;
    }

    private static void AssertSameKv(KvCache expected, KvCache actual, int tokens)
    {
        for (int layer = 0; layer < expected.NumLayers; layer++)
        {
            for (int head = 0; head < expected.NumKvHeads; head++)
            {
                int length = tokens * expected.HeadDim;
                Assert.True(expected.Keys(layer, head)[..length].SequenceEqual(actual.Keys(layer, head)[..length]), $"keys differ in layer {layer} head {head}");
                Assert.True(expected.Values(layer, head)[..length].SequenceEqual(actual.Values(layer, head)[..length]), $"values differ in layer {layer} head {head}");
            }
        }
    }

    private static float MaxDifference(float[] a, float[] b)
    {
        float worst = 0;
        for (int i = 0; i < a.Length; i++)
        {
            worst = Math.Max(worst, Math.Abs(a[i] - b[i]));
        }

        return worst;
    }

    /// <summary>The bundled model and a ~300-token prompt of real text, shared by the tests of this class.</summary>
    public sealed class BundledModel : IDisposable
    {
        public BundledModel()
        {
            Model = LanguageModel.Open(TestData.BundledModel);
            using var fixture = ReferenceFixture.Open(TestData.BundledFixture);
            int[] longest = fixture.Prompts.OrderByDescending(p => p.InputIds.Length).First().InputIds;
            Prompt = longest[..Math.Min(300, longest.Length)];
        }

        public LanguageModel Model { get; }

        public int[] Prompt { get; }

        public void Dispose() => Model.Dispose();
    }
}
