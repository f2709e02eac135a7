using KvFetcher.Core;
using KvFetcher.Core.Keys;
using KvFetcher.Cuda.Gpu;
using KvFetcher.Engine;
using KvFetcher.Engine.Model;
using KvFetcher.Engine.Tokenization;

namespace KvFetcher.Cuda;

/// <summary>
/// A Llama-family model loaded from a Hugging Face directory onto a CUDA device: the GPU twin of
/// <see cref="Engine.LanguageModel"/> (same loading, tokenizer and fingerprint). The weights are uploaded once and
/// the kernels compiled for the device when the model opens. Thread-safe: each request uses its own
/// <see cref="CudaSession"/>. Sessions, caches and the KV import/export follow the same rules as the CPU engine's
/// (<see cref="InferenceSessionBase{TModel, TCache}"/>, <see cref="KvCacheBase"/>).
/// </summary>
public sealed class CudaLanguageModel : IInferenceModel
{
    private readonly LoadedModel? _loaded;
    private readonly CudaContext _context;
    private readonly bool _ownsContext;
    private readonly Lazy<ModelFingerprint> _fingerprint;
    private readonly Lazy<CudaRestoreKernels> _restoreKernels;
    private readonly Lazy<Kvtc.CudaKvtcKernels> _kvtcKernels;

    private CudaLanguageModel(LoadedModel? loaded, ModelConfig config, CudaContext context, bool ownsContext, CudaModelOptions options, DeviceWeights weights, int seed = 0)
    {
        _loaded = loaded;
        _context = context;
        _ownsContext = ownsContext;
        Options = options;
        Config = config;
        Transformer = new CudaTransformer(context, config, weights, options.KvStorageDType, options.MatmulPrecision, options.Attention);
        _restoreKernels = new Lazy<CudaRestoreKernels>(() => new CudaRestoreKernels(_context, Transformer.Module));
        _kvtcKernels = new Lazy<Kvtc.CudaKvtcKernels>(() => Kvtc.CudaKvtcKernels.Compile(_context));
        _fingerprint = new Lazy<ModelFingerprint>(() => loaded is null ? ModelFingerprinter.ComputeSynthetic(config, "cuda-random-bf16", seed) : ModelFingerprinter.Get(loaded));
    }

    /// <summary>Loads the model in <paramref name="directory"/> onto the device.</summary>
    /// <exception cref="InvalidModelException">A model file is missing or invalid.</exception>
    /// <exception cref="CudaUnavailableException">No CUDA device can be used here.</exception>
    public static CudaLanguageModel Open(string directory, CudaModelOptions? options = null)
    {
        options ??= new CudaModelOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxStepTokens, 1);
        LoadedModel loaded = LoadedModel.Open(directory);
        CudaContext? context = null;
        bool owns = options.Context is null;
        try
        {
            context = options.Context ?? CudaContext.Create(options.DeviceOrdinal);
            DType stored = loaded.Weights.Get("model.layers.0.self_attn.q_proj.weight").DType;
            DeviceWeights weights = DeviceWeights.Upload(context, loaded.Config, loaded.Weights, CudaTransformer.MatmulTypeFor(options.MatmulPrecision, stored));
            return new CudaLanguageModel(loaded, loaded.Config, context, owns, options, weights);
        }
        catch
        {
            if (owns)
            {
                context?.Dispose();
            }

            loaded.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A model of <paramref name="config"/>'s shape with bf16 random weights generated on the device (no checkpoint,
    /// no tokenizer): for timing model shapes that are not at hand, e.g. Llama-3-8B's. Its outputs mean nothing.
    /// </summary>
    /// <exception cref="CudaUnavailableException">No CUDA device can be used here.</exception>
    public static CudaLanguageModel CreateWithRandomWeights(ModelConfig config, int seed = 0, CudaModelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate("the synthetic model's configuration");
        options ??= new CudaModelOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxStepTokens, 1);
        CudaContext? context = null;
        bool owns = options.Context is null;
        CudaLanguageModel? model = null;
        try
        {
            context = options.Context ?? CudaContext.Create(options.DeviceOrdinal);
            DeviceWeights weights = DeviceWeights.AllocateRandom(context, config, CudaTransformer.MatmulTypeFor(options.MatmulPrecision, DType.BFloat16));
            model = new CudaLanguageModel(null, config, context, owns, options, weights, seed);
            model.Transformer.FillRandomWeights(seed);
            return model;
        }
        catch
        {
            if (model is not null)
            {
                model.Dispose();
            }
            else if (owns)
            {
                context?.Dispose();
            }

            throw;
        }
    }

    public CudaModelOptions Options { get; }

    public ModelConfig Config { get; }

    /// <summary>The tokenizer (a model with random weights has none).</summary>
    public TextTokenizer Tokenizer => Loaded.Tokenizer;

    /// <summary>The model directory; empty for a model with random weights, which has none (callers that look for
    /// files next to the model, such as a calibration profile, then find none).</summary>
    public string Directory => _loaded?.Directory ?? "";

    /// <summary>
    /// The model's identity in chunk keys and containers: the same as the CPU engine's for a checkpoint; for random
    /// weights, one derived from the shape and seed.
    /// </summary>
    public ModelFingerprint Fingerprint => _fingerprint.Value;

    /// <summary>The device the model runs on.</summary>
    public CudaContext Context => _context;

    public DType KvStorageDType => Options.KvStorageDType;

    public string Device => _context.DeviceName;

    public bool ComputesOnHostCores => false;

    /// <summary>The element type the matrix products take (set by <see cref="CudaModelOptions.MatmulPrecision"/>).</summary>
    public DType MatmulDType => Transformer.MatmulType;

    /// <summary>Device memory the weights take, in bytes.</summary>
    public long WeightBytes => Transformer.WeightBytes;

    /// <summary>Whether prefill attention runs on the tensor cores (<see cref="CudaModelOptions.Attention"/>).</summary>
    public bool UsesTensorCoreAttention => Transformer.UsesTensorCoreAttention;

    /// <summary>The kernels that restore fetched chunks into this model's caches (compiled with the model's kernels).</summary>
    public CudaRestoreKernels RestoreKernels => _restoreKernels.Value;

    /// <summary>The kvtc codec's decoder kernels and device transform tables (a program of their own, compiled on first use; disposed with the model).</summary>
    public Kvtc.CudaKvtcKernels KvtcKernels => _kvtcKernels.Value;

    /// <summary>Whether decode-sized steps take the split-K decode attention kernel (a 16-bit cache, not <see cref="CudaAttentionKernel.CudaCores"/>).</summary>
    public bool UsesDecodeAttention => Transformer.UsesDecodeAttention;

    internal CudaTransformer Transformer { get; }

    private LoadedModel Loaded => _loaded ?? throw new InvalidOperationException("A model with random weights has no checkpoint: no tokenizer or directory.");

    /// <summary>Starts a sequence with an empty KV cache of <paramref name="capacity"/> positions (0: the model's maximum).</summary>
    public CudaSession CreateSession(int capacity = 0) =>
        new(this, Config.SessionCapacity(capacity));

    IInferenceSession IInferenceModel.CreateSession(int capacity) => CreateSession(capacity);

    /// <summary>A new empty device KV cache shaped for this model.</summary>
    public CudaKvCache CreateCache(int capacity) =>
        new(_context, Transformer.Module, Config.NumLayers, Config.NumKvHeads, Config.HeadDim, capacity, Options.KvStorageDType);

    public void Dispose()
    {
        if (_kvtcKernels.IsValueCreated)
        {
            _kvtcKernels.Value.Dispose();
        }

        Transformer.Dispose();
        if (_ownsContext)
        {
            _context.Dispose();
        }

        _loaded?.Dispose();
    }
}
