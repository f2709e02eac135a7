using KvFetcher.Runtime;
using KvFetcher.Engine;
using KvFetcher.Engine.Model;
using KvFetcher.Fetch.Restoring;

namespace KvFetcher.Cuda.Tests;

/// <summary>How <see cref="LocalEngine"/> picks the engine and decoders, and what it says about the choice.</summary>
public class LocalEngineTests
{
    private static string Bundled => GpuModels.Paths("bundled").Model;

    [Fact]
    public void Open_Cpu_CpuEngineWithCpuDecoders()
    {
        using LocalEngine engine = LocalEngine.Open(Bundled, new LocalEngineOptions { Kind = EngineKind.Cpu, Threads = 1 });

        Assert.Equal(EngineKind.Cpu, engine.Kind);
        Assert.IsType<LanguageModel>(engine.Model);
        Assert.Same(HostChunkRestorer.Instance, engine.Restorer);
        Assert.True(engine.Model.ComputesOnHostCores);
        Assert.Equal(Core.DType.Float16, engine.Model.KvStorageDType);
        Assert.Contains("asked for", engine.Choice, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_AutoWithoutDevice_FallsBackToCpuAndSaysWhy()
    {
        Assert.SkipWhen(GpuModels.Available, "A CUDA device is present.");
        using LocalEngine engine = LocalEngine.Open(Bundled, new LocalEngineOptions { Threads = 1 });

        Assert.Equal(EngineKind.Cpu, engine.Kind);
        Assert.Contains("no GPU: ", engine.Choice, StringComparison.Ordinal);
        Assert.Contains("libcuda.so.1", engine.Choice, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_CudaWithoutDevice_ThrowsCudaUnavailable()
    {
        Assert.SkipWhen(GpuModels.Available, "A CUDA device is present.");
        Assert.Throws<CudaUnavailableException>(() => LocalEngine.Open(Bundled, new LocalEngineOptions { Kind = EngineKind.Cuda }));
    }

    [Fact]
    public void Open_AutoWithDevice_GpuEngineWithNvdecRestore()
    {
        Assert.SkipUnless(GpuModels.Available, $"No CUDA device: {GpuModels.Reason}");
        using LocalEngine engine = LocalEngine.Open(Bundled);

        Assert.Equal(EngineKind.Cuda, engine.Kind);
        Assert.IsType<CudaLanguageModel>(engine.Model);
        Assert.False(engine.Model.ComputesOnHostCores);
        using LanguageModel cpu = LanguageModel.Open(Bundled, new LanguageModelOptions { Threads = 1 });
        Assert.Equal(cpu.Fingerprint, engine.Model.Fingerprint);
    }

    [Fact]
    public void SyntheticFingerprint_DependsOnShapeAndSeed_NeverEqualsTheCheckpoint()
    {
        using LanguageModel real = LanguageModel.Open(Bundled, new LanguageModelOptions { Threads = 1 });
        ModelConfig config = real.Config;

        var first = ModelFingerprinter.ComputeSynthetic(config, "cuda-random-bf16", 1);

        Assert.Equal(first, ModelFingerprinter.ComputeSynthetic(config, "cuda-random-bf16", 1));
        Assert.NotEqual(first, ModelFingerprinter.ComputeSynthetic(config, "cuda-random-bf16", 2));
        Assert.NotEqual(first, ModelFingerprinter.ComputeSynthetic(config, "other-generator", 1));
        Assert.NotEqual(first, ModelFingerprinter.ComputeSynthetic(config with { NumLayers = config.NumLayers + 1 }, "cuda-random-bf16", 1));
        Assert.NotEqual(real.Fingerprint, first);
    }
}
