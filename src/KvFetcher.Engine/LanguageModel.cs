using KvFetcher.Core;
using KvFetcher.Core.Keys;
using KvFetcher.Core.Threading;
using KvFetcher.Engine.Cpu;
using KvFetcher.Engine.Model;
using KvFetcher.Engine.Tokenization;

namespace KvFetcher.Engine;

/// <summary>Options of a loaded model.</summary>
public sealed class LanguageModelOptions
{
    /// <summary>Threads for the kernels; 0 uses one per processor (the shared pool).</summary>
    public int Threads { get; init; }

    /// <summary>The dtype KV values are rounded to in new caches (see <see cref="KvCache"/>).</summary>
    public DType KvStorageDType { get; init; } = DType.Float32;

    /// <summary>The most tokens one forward step computes; longer prefills run in steps of this size.</summary>
    public int MaxStepTokens { get; init; } = 512;
}

/// <summary>
/// A Llama-family model loaded from a Hugging Face directory (config.json, *.safetensors, tokenizer.json), ready
/// to run on the CPU. Thread-safe: each request uses its own <see cref="InferenceSession"/>.
/// </summary>
public sealed class LanguageModel : IInferenceModel
{
    private readonly LoadedModel _loaded;
    private readonly WorkerPool _pool;
    private readonly bool _ownsPool;
    private readonly Lazy<ModelFingerprint> _fingerprint;

    private LanguageModel(LoadedModel loaded, LanguageModelOptions options)
    {
        _loaded = loaded;
        Options = options;
        _ownsPool = options.Threads > 0;
        _pool = _ownsPool ? new WorkerPool(options.Threads) : WorkerPool.Shared;
        Transformer = new CpuTransformer(loaded.Config, loaded.Weights, _pool);
        _fingerprint = new Lazy<ModelFingerprint>(() => ModelFingerprinter.Get(_loaded));
    }

    /// <summary>The threads this model's steps run on (allocation checks read its workers' share).</summary>
    internal WorkerPool Pool => _pool;

    /// <summary>Loads the model in <paramref name="directory"/>; bad files raise <see cref="InvalidModelException"/>.</summary>
    public static LanguageModel Open(string directory, LanguageModelOptions? options = null)
    {
        options ??= new LanguageModelOptions();
        ArgumentOutOfRangeException.ThrowIfNegative(options.Threads);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxStepTokens, 1);
        LoadedModel loaded = LoadedModel.Open(directory);
        try
        {
            return new LanguageModel(loaded, options);
        }
        catch
        {
            loaded.Dispose();
            throw;
        }
    }

    public LanguageModelOptions Options { get; }

    public ModelConfig Config => _loaded.Config;

    public TextTokenizer Tokenizer => _loaded.Tokenizer;

    /// <summary>The model directory.</summary>
    public string Directory => _loaded.Directory;

    /// <summary>The model's identity in chunk keys and containers (computed on first use, cached next to the model).</summary>
    public ModelFingerprint Fingerprint => _fingerprint.Value;

    /// <summary>Threads the kernels use.</summary>
    public int Threads => _pool.Concurrency;

    public DType KvStorageDType => Options.KvStorageDType;

    public string Device => $"cpu ({Threads} threads)";

    public bool ComputesOnHostCores => true;

    internal CpuTransformer Transformer { get; }

    /// <summary>Starts a sequence with an empty KV cache of <paramref name="capacity"/> positions (0: the model's maximum).</summary>
    public InferenceSession CreateSession(int capacity = 0) =>
        new(this, Config.SessionCapacity(capacity));

    IInferenceSession IInferenceModel.CreateSession(int capacity) => CreateSession(capacity);

    /// <summary>A new empty KV cache shaped for this model.</summary>
    public KvCache CreateCache(int capacity) =>
        new(Config.NumLayers, Config.NumKvHeads, Config.HeadDim, capacity, Options.KvStorageDType);

    public void Dispose()
    {
        if (_ownsPool)
        {
            _pool.Dispose();
        }

        _loaded.Dispose();
    }
}
