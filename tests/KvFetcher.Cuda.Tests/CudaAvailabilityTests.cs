using KvFetcher.Cuda.Gpu;

namespace KvFetcher.Cuda.Tests;

/// <summary>What the backend says and does where there is no GPU, and what it ships for where there is one.</summary>
public class CudaAvailabilityTests
{
    [Fact]
    public void IsAvailable_WithoutDevice_ExplainsWhatIsMissing()
    {
        Assert.SkipWhen(GpuModels.Available, "A CUDA device is present.");
        bool available = CudaContext.IsAvailable(out string reason);
        Assert.False(available);
        Assert.False(string.IsNullOrWhiteSpace(reason));
        Assert.Contains("Check:", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void IsAvailable_WithDevice_HasNoReason()
    {
        Assert.SkipUnless(GpuModels.Available, $"No CUDA device: {GpuModels.Reason}");
        Assert.True(CudaContext.IsAvailable(out string reason));
        Assert.Equal("", reason);
    }

    [Fact]
    public void Create_WithoutDevice_ThrowsCudaUnavailable()
    {
        Assert.SkipWhen(GpuModels.Available, "A CUDA device is present.");
        CudaUnavailableException e = Assert.Throws<CudaUnavailableException>(() => CudaContext.Create());
        Assert.Contains("libcuda.so.1", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_WithoutDevice_ThrowsCudaUnavailable()
    {
        Assert.SkipWhen(GpuModels.Available, "A CUDA device is present.");
        Assert.Throws<CudaUnavailableException>(() => CudaLanguageModel.Open(GpuModels.Paths("bundled").Model));
    }

    [Theory]
    [InlineData("embed")]
    [InlineData("rmsnorm")]
    [InlineData("qkv_rope")]
    [InlineData("attention")]
    [InlineData("attention_combine")]
    [InlineData("residual_add")]
    [InlineData("swiglu")]
    [InlineData("kv_import")]
    [InlineData("kv_export")]
    [InlineData("argmax")]
    public void EngineSource_DefinesEveryKernelTheEngineLaunches(string kernel) =>
        Assert.Contains($"extern \"C\" __global__ void {kernel}(", KernelModule.EngineSource.AllText.Replace("__launch_bounds__(ATT_WARPS * 32) ", "", StringComparison.Ordinal), StringComparison.Ordinal);

    public static TheoryData<int, string, string, string> KernelVariants => new()
    {
        { 64, "bf16_t", "bf16_t", "bf16_t" },
        { 64, "f32_t", "f32_t", "bf16_t" },
        { 16, "f16_t", "f16_t", "f16_t" },
        { 16, "bf16_t", "f32_t", "f32_t" },
        { 128, "bf16_t", "bf16_t", "bf16_t" },
        { 80, "f16_t", "bf16_t", "f32_t" },
        { 256, "f32_t", "f16_t", "bf16_t" },
    };

    [Theory]
    [MemberData(nameof(KernelVariants))]
    public void EngineSource_CompilesWithNvrtc(int headDim, string kv, string act, string emb)
    {
        Assert.SkipUnless(KernelModule.IsCompilerAvailable(out string reason), $"No NVRTC: {reason}");
        byte[] image = KernelModule.CompileImage(KernelModule.EngineSource, new Version(9, 0), [$"HEAD_DIM={headDim}", $"KV={kv}", $"ACT={act}", $"EMB={emb}"]);
        Assert.True(image.Length > 1000, $"cubin of {image.Length} bytes");
    }

    [Fact]
    public void CompileImage_BadSource_ThrowsWithCompilerLog()
    {
        Assert.SkipUnless(KernelModule.IsCompilerAvailable(out string reason), $"No NVRTC: {reason}");
        CudaException e = Assert.Throws<CudaException>(() => KernelModule.CompileImage(new KernelSource("bad.cu", "extern \"C\" __global__ void k() { undeclared(); }"), new Version(9, 0), []));
        Assert.Equal("NVRTC", e.Library);
        Assert.Contains("nvrtcCompileProgram", e.Call, StringComparison.Ordinal);
        Assert.Contains("undeclared", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void EngineSource_IncludesEachEmbeddedPartOnce()
    {
        KernelSource source = KernelModule.EngineSource;
        Assert.Equal(["Attention.cuh", "Common.cuh", "KvTransfer.cuh", "Layers.cuh", "Restore.cuh", "Testing.cuh"], source.Headers.Select(h => h.Name));
        foreach ((string name, _) in source.Headers)
        {
            Assert.Single(source.Text.Split('\n'), line => line == $"#include \"{name}\"");
        }

        Assert.StartsWith("#include \"Common.cuh\"", source.Text.Split('\n').First(l => l.StartsWith('#')), StringComparison.Ordinal);
    }

    [Fact]
    public void CompileImage_ErrorInAnIncludedPart_NamesThatPart()
    {
        Assert.SkipUnless(KernelModule.IsCompilerAvailable(out string reason), $"No NVRTC: {reason}");
        var source = new KernelSource("main.cu", "#include \"part.cuh\"\n", [("part.cuh", "extern \"C\" __global__ void k() { undeclared(); }\n")]);
        CudaException e = Assert.Throws<CudaException>(() => KernelModule.CompileImage(source, new Version(9, 0), []));
        Assert.Contains("part.cuh", e.Message, StringComparison.Ordinal);
    }
}
