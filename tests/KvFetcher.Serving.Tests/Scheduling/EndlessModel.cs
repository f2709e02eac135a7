using KvFetcher.Core;
using KvFetcher.Core.Keys;
using KvFetcher.Engine;
using KvFetcher.Engine.Model;
using KvFetcher.Engine.Tokenization;

namespace KvFetcher.Serving.Tests.Scheduling;

/// <summary>
/// A model over the bundled one that never chooses end of sequence (its logits are masked after every step), so a
/// request generates exactly its token limit whatever the prompt: tests of the scheduler do not depend on where the
/// bundled model happens to stop, or on it looping.
/// </summary>
internal sealed class EndlessModel(IInferenceModel inner) : IInferenceModel
{
    public ModelConfig Config => inner.Config;

    public TextTokenizer Tokenizer => inner.Tokenizer;

    public string Directory => inner.Directory;

    public ModelFingerprint Fingerprint => inner.Fingerprint;

    public DType KvStorageDType => inner.KvStorageDType;

    public string Device => inner.Device;

    public bool ComputesOnHostCores => inner.ComputesOnHostCores;

    public IInferenceSession CreateSession(int capacity = 0) => new Session(this, inner.CreateSession(capacity));

    /// <summary>The greedy continuation of <paramref name="prompt"/> by this model, as text.</summary>
    public string Greedy(int[] prompt, int maxTokens)
    {
        var generator = new KvFetcher.Engine.Generation.TextGenerator(CreateSession(prompt.Length + maxTokens),
            new KvFetcher.Engine.Generation.SamplingOptions { MaxTokens = maxTokens });
        return Tokenizer.Decode([.. generator.Generate(prompt)], skipSpecial: true);
    }

    public void Dispose()
    {
        // The fixture owns the model.
    }

    private sealed class Session(EndlessModel model, IInferenceSession inner) : IInferenceSession
    {
        public IInferenceModel Model => model;

        public IKvCache Cache => inner.Cache;

        public int VocabSize => inner.VocabSize;

        public void Prefill(ReadOnlySpan<int> tokens, int startPosition, Span<float> lastLogits)
        {
            inner.Prefill(tokens, startPosition, lastLogits);
            NeverEnd(lastLogits);
        }

        public void Decode(int token, int position, Span<float> logits)
        {
            inner.Decode(token, position, logits);
            NeverEnd(logits);
        }

        public void Reset() => inner.Reset();

        public void Dispose() => inner.Dispose();

        private void NeverEnd(Span<float> logits)
        {
            foreach (int eos in model.Tokenizer.EosIds)
            {
                if (eos < logits.Length)
                {
                    logits[eos] = float.NegativeInfinity;
                }
            }
        }
    }
}
