using KvFetcher.Core;

namespace KvFetcher.Cuda.Tests;

/// <summary>
/// The CUDA engine against Hugging Face transformers' fp32 outputs and against the CPU engine (GpuChecks). Skipped,
/// not passed, where there is no CUDA device.
/// </summary>
public class GpuParityTests(ITestOutputHelper output)
{
    public static TheoryData<string> Models => [.. GpuModels.Names];

    [Theory]
    [MemberData(nameof(Models))]
    public void Logits_StoredSplitPrecision_WithinTwoHundredthsOfTransformers(string name) => Run(() => GpuChecks.Logits(name, CudaMatmulPrecision.StoredSplit));

    [Theory]
    [MemberData(nameof(Models))]
    public void Logits_TensorFloat32Precision_WithinTwoHundredthsOfTransformers(string name) => Run(() => GpuChecks.Logits(name, CudaMatmulPrecision.TensorFloat32));

    [Theory]
    [MemberData(nameof(Models))]
    public void Logits_StoredPrecision_WithinDocumentedBound(string name) => Run(() => GpuChecks.Logits(name, CudaMatmulPrecision.Stored));

    [Theory]
    [MemberData(nameof(Models))]
    public void Logits_Float32Precision_MatchTransformersLikeCpu(string name) => Run(() => GpuChecks.Logits(name, CudaMatmulPrecision.Float32));

    [Theory]
    [MemberData(nameof(Models))]
    public void GreedyContinuation_Float32Precision_MatchesTransformers(string name) => Run(() => GpuChecks.Greedy(name, CudaMatmulPrecision.Float32));

    [Theory]
    [MemberData(nameof(Models))]
    public void GreedyContinuation_StoredSplitPrecision_MatchesTransformers(string name) => Run(() => GpuChecks.Greedy(name, CudaMatmulPrecision.StoredSplit));

    [Theory]
    [MemberData(nameof(Models))]
    public void GreedyContinuation_TensorFloat32Precision_MatchesTransformers(string name) => Run(() => GpuChecks.Greedy(name, CudaMatmulPrecision.TensorFloat32));

    [Fact]
    public void KvCache_AfterPrefill_MatchesCpuEngineAndTransformers() => Run(GpuChecks.KvVersusCpu);

    [Fact]
    public void PrefillGreedy_DeviceArgMax_MatchesHostArgMax() => Run(GpuChecks.DeviceArgMax);

    [Theory]
    [InlineData(new[] { 1 })]
    [InlineData(new[] { 7 })]
    [InlineData(new[] { 100, 3, 129, 1, 64 })]
    public void Prefill_AnyChunking_MatchesOneShot(int[] pattern) => Run(() => GpuChecks.ChunkedPrefill(pattern));

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.Float16)]
    [InlineData(DType.BFloat16)]
    public void ExportImport_InStorageDType_IsBitExact(DType storage) => Run(() => GpuChecks.ImportExportRoundTrip(storage));

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void ImportReversedChunks_ThenContinue_SameGreedyOutputAsFullPrefill(DType storage) => Run(() => GpuChecks.ReuseAfterImport(storage));

    [Theory]
    [MemberData(nameof(LayerSplits))]
    public void PrefillLowerLayers_ThenImportUpper_BitIdenticalToTheSameStepsComputedWhole(string name, CudaMatmulPrecision precision, DType storage, int split, bool importFirst, bool fromDevice) =>
        Run(() => GpuChecks.LayerSplitPrefill(name, precision, storage, split, importFirst, fromDevice));

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.BFloat16)]
    public void OursLayerReuse_LosslessLadder_SameGreedyOutputAsFullPrefill(DType storage) => Run(() => GpuReuseChecks.OursLayerReuse(storage));

    /// <summary>The layer-split cases the device runner runs too (<see cref="GpuChecks.LayerSplitCases"/>).</summary>
    public static TheoryData<string, CudaMatmulPrecision, DType, int, bool, bool> LayerSplits
    {
        get
        {
            var data = new TheoryData<string, CudaMatmulPrecision, DType, int, bool, bool>();
            foreach ((string name, CudaMatmulPrecision precision, DType storage, int split, bool importFirst, bool fromDevice) in GpuChecks.LayerSplitCases)
            {
                data.Add(name, precision, storage, split, importFirst, fromDevice);
            }

            return data;
        }
    }

    [Theory]
    [InlineData("bundled", DType.BFloat16)]
    [InlineData("bundled", DType.Float16)]
    [InlineData("tiny-mistral", DType.Float16)]
    [InlineData("tiny-llama3-rope", DType.BFloat16)]
    public void Prefill_TensorCoreAttention_WithinBf16BoundOfCudaCoreKernel(string name, DType kvStorage) => Run(() => GpuChecks.FlashAttentionVersusCudaCores(name, kvStorage));

    [Theory]
    [InlineData("bundled", DType.BFloat16)]
    [InlineData("tiny-mistral", DType.Float16)]
    [InlineData("tiny-llama3-rope", DType.BFloat16)]
    public void Decode_SplitKKernel_MatchesCudaCoreKernel(string name, DType kvStorage) => Run(() => GpuChecks.DecodeVersusCudaCores(name, kvStorage));

    [Theory]
    [InlineData("bundled")]
    [InlineData("tiny-llama3-rope")]
    public void Logits_StoredPrecisionBf16Cache_WithinDocumentedBound(string name) => Run(() => GpuChecks.FlashLogits(name, DType.BFloat16));

    private void Run(Func<CheckResult> check)
    {
        Assert.SkipUnless(GpuModels.Available, $"No CUDA device: {GpuModels.Reason}");
        CheckResult result = check();
        output.WriteLine(result.ToString());
        Assert.True(result.Passed, result.ToString());
    }
}
