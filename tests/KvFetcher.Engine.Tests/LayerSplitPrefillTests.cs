using KvFetcher.Core;

namespace KvFetcher.Engine.Tests;

/// <summary>
/// A chunk split by layers (its lower layers computed, its upper layers imported from another session's export) gives
/// exactly what a full prefill gives, in either order, and counts as filled only once both halves are in.
/// </summary>
public sealed class LayerSplitPrefillTests : IClassFixture<ChunkedPrefillTests.BundledModel>
{
    private const int ChunkTokens = 64;
    private readonly LanguageModel _model;
    private readonly int[] _prompt;

    public LayerSplitPrefillTests(ChunkedPrefillTests.BundledModel bundled)
    {
        _model = bundled.Model;
        _prompt = bundled.Prompt;
    }

    [Theory]
    [InlineData(1, DType.Float16, false)]
    [InlineData(3, DType.Float16, true)]
    [InlineData(5, DType.BFloat16, false)]
    [InlineData(2, DType.Float32, true)]
    public void PrefillLowerLayers_ThenImportUpper_ContinuesBitIdentically(int split, DType storage, bool importFirst)
    {
        using var model = LanguageModel.Open(TestData.BundledModel, new LanguageModelOptions { KvStorageDType = storage });
        int layers = model.Config.NumLayers;
        Assert.InRange(split, 1, layers - 1);
        int vocab = model.Config.VocabSize;
        const int Steps = 8;

        // The reference: the whole prompt prefilled in one pass, then greedy decoding.
        InferenceSession full = model.CreateSession(_prompt.Length + Steps);
        var expected = new float[vocab];
        full.Prefill(_prompt, 0, expected);

        // Chunk 0 computed, chunk 1 split at `split` (upper layers from the reference's export), the rest computed.
        InferenceSession reused = model.CreateSession(_prompt.Length + Steps);
        reused.Prefill(_prompt.AsSpan(0, ChunkTokens), 0, new float[vocab]);
        byte[] upper = ExportUpper(full.Cache, ChunkTokens, 2 * ChunkTokens, split, storage);
        if (importFirst)
        {
            reused.Cache.ImportLayers(ChunkTokens, 2 * ChunkTokens, split, storage, upper);
            Assert.Equal(ChunkTokens, reused.Cache.Length);
            reused.PrefillLowerLayers(_prompt.AsSpan(ChunkTokens, ChunkTokens), ChunkTokens, split);
        }
        else
        {
            reused.PrefillLowerLayers(_prompt.AsSpan(ChunkTokens, ChunkTokens), ChunkTokens, split);
            Assert.Equal(ChunkTokens, reused.Cache.Length);
            reused.Cache.ImportLayers(ChunkTokens, 2 * ChunkTokens, split, storage, upper);
        }

        Assert.Equal(2 * ChunkTokens, reused.Cache.Length);
        var actual = new float[vocab];
        reused.Prefill(_prompt.AsSpan(2 * ChunkTokens), 2 * ChunkTokens, actual);

        Assert.True(expected.AsSpan().SequenceEqual(actual), "the first token's logits differ from a full prefill's");
        for (int i = 0; i < Steps; i++)
        {
            int next = KvFetcher.Engine.Cpu.Kernels.ArgMax(expected);
            full.Decode(next, _prompt.Length + i, expected);
            reused.Decode(next, _prompt.Length + i, actual);
            Assert.True(expected.AsSpan().SequenceEqual(actual), $"logits differ at decode step {i}");
        }
    }

    [Fact]
    public void ImportLayers_UpperFromTheWrongTokens_ChangesTheContinuation()
    {
        // The check above can fail: upper layers of other positions give other logits.
        int layers = _model.Config.NumLayers;
        int vocab = _model.Config.VocabSize;
        InferenceSession full = _model.CreateSession(_prompt.Length);
        var expected = new float[vocab];
        full.Prefill(_prompt, 0, expected);

        InferenceSession wrong = _model.CreateSession(_prompt.Length);
        wrong.Prefill(_prompt.AsSpan(0, ChunkTokens), 0, new float[vocab]);
        wrong.PrefillLowerLayers(_prompt.AsSpan(ChunkTokens, ChunkTokens), ChunkTokens, layers - 1);
        wrong.Cache.ImportLayers(ChunkTokens, 2 * ChunkTokens, layers - 1, _model.KvStorageDType, ExportUpper(full.Cache, 0, ChunkTokens, layers - 1, _model.KvStorageDType));
        var actual = new float[vocab];
        wrong.Prefill(_prompt.AsSpan(2 * ChunkTokens), 2 * ChunkTokens, actual);

        Assert.False(expected.AsSpan().SequenceEqual(actual));
    }

    [Fact]
    public void PrefillLowerLayers_AloneOrAllLayers_LeavesThePositionsUnfilledOrRefuses()
    {
        int layers = _model.Config.NumLayers;
        InferenceSession session = _model.CreateSession(2 * ChunkTokens);
        session.PrefillLowerLayers(_prompt.AsSpan(0, ChunkTokens), 0, layers - 1);

        Assert.Equal(0, session.Cache.Length);
        Assert.False(session.Cache.IsFilled(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => session.PrefillLowerLayers(_prompt.AsSpan(0, ChunkTokens), 0, layers));
        Assert.Throws<InvalidOperationException>(() => session.PrefillLowerLayers(_prompt.AsSpan(0, 4), ChunkTokens, 1)); // [0, 64) not filled
    }

    [Fact]
    public void Truncate_AfterHalfASplit_ForgetsTheHalf()
    {
        int layers = _model.Config.NumLayers;
        InferenceSession full = _model.CreateSession(ChunkTokens);
        full.Prefill(_prompt.AsSpan(0, ChunkTokens), 0, new float[_model.Config.VocabSize]);
        InferenceSession session = _model.CreateSession(ChunkTokens);
        session.PrefillLowerLayers(_prompt.AsSpan(0, ChunkTokens), 0, 2);
        session.Reset();

        // Only the upper layers from 2 are imported: the lower layers computed before the reset do not count.
        session.Cache.ImportLayers(0, ChunkTokens, 2, _model.KvStorageDType, ExportUpper(full.Cache, 0, ChunkTokens, 2, _model.KvStorageDType));

        Assert.Equal(0, session.Cache.Length);
        Assert.True(layers > 2);
    }

    /// <summary>Layers [from, layers) of positions [start, end) in the wire layout cut to those layers.</summary>
    private static byte[] ExportUpper(KvCache cache, int start, int end, int from, DType dtype)
    {
        var all = new byte[cache.GetExportByteCount(end - start, dtype)];
        cache.Export(start, end, dtype, all);
        int layerBytes = all.Length / cache.NumLayers;
        return all[(from * layerBytes)..];
    }
}
