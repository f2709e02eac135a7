namespace KvFetcher.Cuda.Tests;

/// <summary>The kvtc codec's GPU decoder against its CPU decoder (KvtcGpuChecks). Skipped, not passed, where there is no CUDA device.</summary>
public class KvtcGpuTests(ITestOutputHelper output)
{
    [Fact]
    public void Decode_RealKvAtThreeLevels_GpuWithinToleranceOfCpu() => Run(KvtcGpuChecks.GpuVersusCpu);

    [Fact]
    public void Decode_HostileChunks_InvalidKvDataThenIntactChunkStillDecodes() => Run(KvtcGpuChecks.HostileInput);

    [Fact]
    public void Decode_HostileChunksOfTheGpuCheck_CpuDecoderRefusesThemToo()
    {
        CheckResult result = KvtcGpuChecks.HostileInputOnCpu();
        output.WriteLine(result.ToString());
        Assert.True(result.Passed, result.ToString());
    }

    [Fact]
    public void Decode_ManyChunksOnTwoSlots_MeasuresARate() => Run(() => KvtcGpuChecks.Rate([2], seconds: 0.5).Result);

    private void Run(Func<CheckResult> check)
    {
        Assert.SkipUnless(GpuModels.Available, $"No CUDA device: {GpuModels.Reason}");
        CheckResult result = check();
        output.WriteLine(result.ToString());
        Assert.True(result.Passed, result.ToString());
    }
}
