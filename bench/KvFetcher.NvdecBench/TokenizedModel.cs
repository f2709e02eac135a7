using KvFetcher.Core;
using KvFetcher.Core.Keys;
using KvFetcher.Engine;
using KvFetcher.Engine.Model;
using KvFetcher.Engine.Tokenization;

namespace KvFetcher.NvdecBench;

/// <summary>
/// A model with random weights (no checkpoint, so no tokenizer) seen through a borrowed tokenizer, so that what needs
/// one (the engine loop's end-of-sequence ids, the serving benchmark's real-text prompts) can drive it. The borrowed
/// tokenizer's ids must fit the model's vocabulary; everything else is the inner model's. Does not own the inner model.
/// </summary>
internal sealed class TokenizedModel : IInferenceModel
{
    private readonly IInferenceModel _inner;

    public TokenizedModel(IInferenceModel inner, TextTokenizer tokenizer, string name)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (tokenizer.VocabSize > inner.Config.VocabSize)
        {
            throw new ArgumentException($"The tokenizer's {tokenizer.VocabSize} ids do not fit the model's vocabulary of {inner.Config.VocabSize}.", nameof(tokenizer));
        }

        _inner = inner;
        Tokenizer = tokenizer;
        Directory = name;
    }

    public ModelConfig Config => _inner.Config;

    public TextTokenizer Tokenizer { get; }

    /// <summary>A name for reports (the model has no directory).</summary>
    public string Directory { get; }

    public ModelFingerprint Fingerprint => _inner.Fingerprint;

    public DType KvStorageDType => _inner.KvStorageDType;

    public string Device => _inner.Device;

    public bool ComputesOnHostCores => _inner.ComputesOnHostCores;

    public IInferenceSession CreateSession(int capacity = 0) => _inner.CreateSession(capacity);

    public void Dispose()
    {
        // The inner model belongs to its LocalEngine.
    }
}
