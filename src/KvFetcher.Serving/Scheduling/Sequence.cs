using System.Diagnostics;
using System.Text;
using KvFetcher.Engine;
using KvFetcher.Engine.Generation;
using KvFetcher.Engine.Tokenization;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Scheduling;

namespace KvFetcher.Serving.Scheduling;

/// <summary>
/// One request inside the <see cref="EngineScheduler"/>: its session, how far its prompt is computed, its sampler and
/// the text generated so far (held back where it might be the start of a stop sequence). After the hand-over to the
/// engine thread only that thread touches it.
/// </summary>
internal sealed class Sequence
{
    private readonly List<int> _generated = [];
    private readonly StringBuilder _text = new();
    private readonly int _longestStop;
    private int _released;
    private bool _cut;
    private TokenStreamDecoder? _decoder;
    private Sampler? _sampler;

    public Sequence(GenerationRequest request, ContextPlan? plan, CancellationToken cancellationToken)
    {
        Request = request;
        Plan = plan;
        CancellationToken = cancellationToken;
        Handle = new Generation(request.Stream);
        Submitted = Stopwatch.GetTimestamp();
        _longestStop = request.StopSequences.Count == 0 ? 0 : request.StopSequences.Max(s => s.Length);
    }

    public GenerationRequest Request { get; }

    /// <summary>The chunk keys of the prompt (null when reuse is off).</summary>
    public ContextPlan? Plan { get; }

    public CancellationToken CancellationToken { get; }

    /// <summary>The scheduler the request was submitted to (for its leave-the-queue callback).</summary>
    public EngineScheduler? Scheduler { get; init; }

    /// <summary>Its place in the scheduler's queue while waiting for a session (guarded by the scheduler's lock).</summary>
    public LinkedListNode<Sequence>? QueueNode { get; set; }

    /// <summary>Takes the request out of the queue when its token is cancelled while it waits.</summary>
    public CancellationTokenRegistration QueueExit { get; set; }

    public Generation Handle { get; }

    public IInferenceSession? Session { get; set; }

    public long Submitted { get; }

    public long Admitted { get; set; }

    public long Ready { get; set; }

    /// <summary>When the last token was chosen (for the inter-token latency).</summary>
    public long LastTokenAt { get; set; }

    /// <summary>Bytes of KV cache the session holds (counted in the scheduler's KV memory in use).</summary>
    public long KvBytes { get; set; }

    /// <summary>What the waiting queue fetched; null without reuse or when the prefix is fetched beside the engine.</summary>
    public RestoreReport? Restore { get; set; }

    /// <summary>The prefill of a prompt with a stored prefix, computed beside its fetcher; null otherwise.</summary>
    public ReusePrefill? Prefill { get; set; }

    /// <summary>How the stored prefix was split between the engine and the fetcher (set at the first token).</summary>
    public ReuseSplit? Split { get; set; }

    /// <summary>Stops the fetcher with the request (its client leaving, or the scheduler stopping).</summary>
    public CancellationTokenSource? Stopping { get; set; }

    /// <summary>Completes once the request's fetcher has stopped writing into its session.</summary>
    public Task? FetcherStopped { get; set; }

    /// <summary>The engine computed for this reuse request in the current iteration.</summary>
    public bool Served { get; set; }

    /// <summary>Prompt positions [0, Computed) are in the cache.</summary>
    public int Computed { get; set; }

    /// <summary>Prefill slices other requests took since this one's last (the scheduler's anti-starvation count).</summary>
    public int PassedOver { get; set; }

    /// <summary>The prompt tokens that came from the store.</summary>
    public int Reused { get; set; }

    public PrefillInfo? Info { get; set; }

    /// <summary>The last token chosen (the next decode step's input).</summary>
    public int LastToken { get; private set; }

    public int Generated { get; private set; }

    /// <summary>The tokens chosen so far, in order (the last one is <see cref="LastToken"/>).</summary>
    public IReadOnlyList<int> GeneratedTokens => _generated;

    public bool IsCancelled => CancellationToken.IsCancellationRequested;

    /// <summary>Prepares sampling once the engine takes the request.</summary>
    public void StartSampling(TextTokenizer tokenizer, int vocabSize)
    {
        _sampler = new Sampler(new SamplingOptions { Temperature = Request.Temperature, TopP = Request.TopP, Seed = Request.Seed, MaxTokens = Request.MaxTokens }, vocabSize);
        _decoder = tokenizer.CreateStreamDecoder(skipSpecial: true);
    }

    /// <summary>
    /// Chooses the next token from <paramref name="logits"/> and adds its text; returns why generation ends now, or null
    /// when it goes on.
    /// </summary>
    public FinishReason? Accept(ReadOnlySpan<float> logits, IReadOnlySet<int> eos)
    {
        int token = _sampler!.Next(logits);
        LastToken = token;
        Generated++;
        _generated.Add(token);
        if (eos.Contains(token))
        {
            return FinishReason.Stop;
        }

        _text.Append(_decoder!.Append(token));
        if (_longestStop > 0 && TryCutAtStop())
        {
            return FinishReason.Stop;
        }

        if (Generated >= Request.MaxTokens)
        {
            return FinishReason.Length;
        }

        Release(_text.Length - HeldBack());
        return null;
    }

    /// <summary>Ends the text: the decoder's held-back bytes and anything held back for stop sequences go out.</summary>
    public string Finish(FinishReason reason)
    {
        if (!_cut)
        {
            _text.Append(_decoder!.Flush());
            if (_longestStop > 0)
            {
                _ = TryCutAtStop();
            }
        }

        Release(_text.Length);
        return _text.ToString();
    }

    // The earliest stop sequence in the text not yet released (a released piece never holds a stop's first character).
    private bool TryCutAtStop()
    {
        int from = Math.Max(0, _released);
        string tail = _text.ToString(from, _text.Length - from);
        int best = -1;
        foreach (string stop in Request.StopSequences)
        {
            int at = tail.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (best < 0 || at < best))
            {
                best = at;
            }
        }

        if (best < 0)
        {
            return false;
        }

        _text.Length = from + best;
        _cut = true;
        return true;
    }

    // The longest end of the text that is the start of some stop sequence: it may yet become one.
    private int HeldBack()
    {
        int longest = 0;
        int available = _text.Length - _released;
        foreach (string stop in Request.StopSequences)
        {
            for (int k = Math.Min(stop.Length - 1, available); k > longest; k--)
            {
                if (EndsWith(stop.AsSpan(0, k)))
                {
                    longest = k;
                    break;
                }
            }
        }

        return longest;
    }

    private bool EndsWith(ReadOnlySpan<char> value)
    {
        int start = _text.Length - value.Length;
        for (int i = 0; i < value.Length; i++)
        {
            if (_text[start + i] != value[i])
            {
                return false;
            }
        }

        return true;
    }

    private void Release(int upTo)
    {
        if (upTo > _released)
        {
            if (Request.Stream)
            {
                Handle.PublishText(_text.ToString(_released, upTo - _released));
            }

            _released = upTo;
        }
    }
}
