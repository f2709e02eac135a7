using KvFetcher.Core;
using KvFetcher.Core.Keys;
using KvFetcher.Engine.Model;
using KvFetcher.Engine.Tokenization;

namespace KvFetcher.Engine;

/// <summary>
/// A loaded model on some engine (<see cref="LanguageModel"/> on the CPU, the CUDA engine on a GPU): what reuse,
/// scheduling and serving need without knowing where the model runs. Both engines give the same fingerprint for one
/// checkpoint, so a chunk stored by one is reused by the other.
/// </summary>
public interface IInferenceModel : IDisposable
{
    ModelConfig Config { get; }

    TextTokenizer Tokenizer { get; }

    /// <summary>The model directory; empty when the model was not loaded from one (random weights).</summary>
    string Directory { get; }

    /// <summary>The model's identity in chunk keys and containers.</summary>
    ModelFingerprint Fingerprint { get; }

    /// <summary>The element type the KV cache stores (and chunks are stored in).</summary>
    DType KvStorageDType { get; }

    /// <summary>Where the model runs, for reports: e.g. "cpu (2 threads)" or the GPU's name.</summary>
    string Device { get; }

    /// <summary>
    /// Whether the engine computes on the host's cores, which the CPU decoders and restores of fetched chunks then take
    /// from it (false for a GPU engine: fetching alongside costs its compute nothing).
    /// </summary>
    bool ComputesOnHostCores { get; }

    /// <summary>Starts a sequence with an empty KV cache of <paramref name="capacity"/> positions (0: the model's maximum).</summary>
    IInferenceSession CreateSession(int capacity = 0);
}
