using KvFetcher.Core;
using KvFetcher.Cuda;
using KvFetcher.Cuda.Nvdec;
using KvFetcher.Cuda.Reuse;
using KvFetcher.Engine;
using KvFetcher.Fetch.Restoring;

namespace KvFetcher.Runtime;

/// <summary>Which engine runs the model.</summary>
public enum EngineKind
{
    /// <summary>The GPU when CUDA can be used here, else the CPU.</summary>
    Auto,

    Cpu,

    Cuda,
}

/// <summary>How <see cref="LocalEngine.Open"/> loads a model.</summary>
public sealed record LocalEngineOptions
{
    public EngineKind Kind { get; init; } = EngineKind.Auto;

    /// <summary>The KV cache's element type (chunks are stored in it); fp16 by default, as chunks are stored.</summary>
    public DType KvStorageDType { get; init; } = DType.Float16;

    /// <summary>CPU engine threads (0: all cores).</summary>
    public int Threads { get; init; }

    /// <summary>The most tokens one forward step computes (0: the engine's default).</summary>
    public int MaxStepTokens { get; init; }

    /// <summary>Decode <c>video</c> chunks on NVDEC when the GPU engine runs and NVDEC can decode them.</summary>
    public bool Nvdec { get; init; } = true;

    /// <summary>NVDEC decode sessions shared by all requests (an H100 has 7 decoders).</summary>
    public int NvdecSessions { get; init; } = 7;
}

/// <summary>
/// A model on the engine this machine runs best, with the chunk restorer that goes with it: the CUDA engine and NVDEC
/// restore when a GPU can be used, the CPU engine and CPU decoders otherwise. Chosen once, at load. The composition
/// point of the engines and restorers: the CLI, serving and the benchmarks open their model here.
/// </summary>
public sealed class LocalEngine : IDisposable
{
    private readonly NvdecPool? _pool;
    private readonly NvdecDevice? _nvdec;

    private LocalEngine(IInferenceModel model, IChunkRestorer restorer, EngineKind kind, string why, NvdecDevice? nvdec, NvdecPool? pool)
    {
        Model = model;
        Restorer = restorer;
        Kind = kind;
        Choice = why;
        _nvdec = nvdec;
        _pool = pool;
    }

    public IInferenceModel Model { get; }

    /// <summary>How fetched chunks reach <see cref="Model"/>'s caches.</summary>
    public IChunkRestorer Restorer { get; }

    /// <summary>The engine in use (never <see cref="EngineKind.Auto"/>).</summary>
    public EngineKind Kind { get; }

    /// <summary>Why: the device and decoders in use, or what was missing for the GPU.</summary>
    public string Choice { get; }

    /// <summary>Loads the model in <paramref name="directory"/>.</summary>
    /// <exception cref="CudaUnavailableException"><see cref="EngineKind.Cuda"/> was asked for and no GPU can be used.</exception>
    public static LocalEngine Open(string directory, LocalEngineOptions? options = null)
    {
        options ??= new LocalEngineOptions();
        string why = "";
        bool cuda = options.Kind switch
        {
            EngineKind.Cpu => false,
            EngineKind.Cuda => true,
            _ => CudaContext.IsAvailable(out why),
        };
        if (!cuda)
        {
            LanguageModel cpu = LanguageModel.Open(directory, new LanguageModelOptions
            {
                Threads = options.Threads,
                KvStorageDType = options.KvStorageDType,
                MaxStepTokens = options.MaxStepTokens > 0 ? options.MaxStepTokens : new LanguageModelOptions().MaxStepTokens,
            });
            // The first sentence of why CUDA is unusable; CudaContext.IsAvailable's full text lists what to check.
            string reason = options.Kind == EngineKind.Cpu ? "asked for" : $"no GPU: {why.Split(". ")[0]}";
            return new LocalEngine(cpu, HostChunkRestorer.Instance, EngineKind.Cpu, $"{cpu.Device}, cpu decoders ({reason})", null, null);
        }

        CudaLanguageModel gpu = CudaLanguageModel.Open(directory, new CudaModelOptions
        {
            KvStorageDType = options.KvStorageDType,
            MaxStepTokens = options.MaxStepTokens > 0 ? options.MaxStepTokens : new CudaModelOptions().MaxStepTokens,
        });
        return WithDecoders(gpu, options);
    }

    /// <summary>
    /// Wraps a loaded GPU model (e.g. one with random weights for timing a large shape) with NVDEC restore when
    /// <paramref name="options"/> allow it and NVDEC can decode here; takes ownership of <paramref name="model"/>.
    /// </summary>
    public static LocalEngine WithDecoders(CudaLanguageModel model, LocalEngineOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new LocalEngineOptions();
        string reason = "";
        if (!options.Nvdec || !NvdecDevice.IsSupported(out reason))
        {
            string why = options.Nvdec ? $"no NVDEC: {reason}" : "NVDEC off";
            var withoutNvdec = new GpuChunkRestorer(model, pool: null);
            return new LocalEngine(model, withoutNvdec, EngineKind.Cuda, $"{model.Device}, {withoutNvdec.Name} decoders ({why})", null, null);
        }

        NvdecDevice? device = null;
        NvdecPool? pool = null;
        try
        {
            device = NvdecDevice.Open(model.Context);
            pool = new NvdecPool(device, options.NvdecSessions);
            var restorer = new GpuChunkRestorer(model, pool);
            return new LocalEngine(model, restorer, EngineKind.Cuda, $"{model.Device}, {restorer.Name} decoders", device, pool);
        }
        catch
        {
            pool?.Dispose();
            device?.Dispose();
            model.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        _pool?.Dispose();
        _nvdec?.Dispose();
        Model.Dispose();
    }
}
