using System.Diagnostics;

namespace KvFetcher.Engine.Generation;

/// <summary>Timings of one generation: prefill, time to first token and decode.</summary>
public sealed record GenerationStats
{
    /// <summary>Prompt tokens in the sequence.</summary>
    public int PromptTokens { get; init; }

    /// <summary>Prompt tokens that were already in the KV cache (reused) and not computed.</summary>
    public int ReusedTokens { get; init; }

    /// <summary>Time to compute the prompt's logits (the prefill of the tokens not reused).</summary>
    public TimeSpan Prefill { get; init; }

    /// <summary>From the call to the first generated token.</summary>
    public TimeSpan TimeToFirstToken { get; init; }

    /// <summary>Tokens generated after the first.</summary>
    public int DecodeTokens { get; init; }

    /// <summary>Time of those decode steps.</summary>
    public TimeSpan Decode { get; init; }

    public double PrefillTokensPerSecond => (PromptTokens - ReusedTokens) / Math.Max(Prefill.TotalSeconds, 1e-9);

    public double DecodeTokensPerSecond => DecodeTokens / Math.Max(Decode.TotalSeconds, 1e-9);
}

/// <summary>
/// Runs prefill and then decode on an <see cref="IInferenceSession"/>, streaming generated token ids. A prompt whose
/// first <see cref="KvCacheBase.Length"/> positions are already in the cache (computed earlier or imported) is
/// continued from there.
/// </summary>
public sealed class TextGenerator
{
    private readonly IInferenceSession _session;
    private readonly SamplingOptions _options;
    private readonly Sampler _sampler;
    private readonly float[] _logits;

    public TextGenerator(IInferenceSession session, SamplingOptions options)
    {
        _session = session;
        _options = options;
        _sampler = new Sampler(options, session.VocabSize);
        _logits = new float[session.VocabSize];
    }

    /// <summary>Timings of the last completed <see cref="Generate"/>.</summary>
    public GenerationStats? Stats { get; private set; }

    /// <summary>
    /// Generates up to <see cref="SamplingOptions.MaxTokens"/> tokens after <paramref name="prompt"/>, yielding each as
    /// soon as it is chosen. The cache must hold nothing beyond the prompt's own tokens.
    /// </summary>
    public IEnumerable<int> Generate(int[] prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        if (prompt.Length == 0)
        {
            throw new ArgumentException("The prompt has no tokens.", nameof(prompt));
        }

        if (_options.MaxTokens + prompt.Length > _session.Cache.Capacity)
        {
            throw new ArgumentOutOfRangeException(nameof(prompt), prompt.Length, $"Prompt ({prompt.Length} tokens) plus {_options.MaxTokens} new tokens exceed the context of {_session.Cache.Capacity} tokens.");
        }

        return Run(prompt);
    }

    private IEnumerable<int> Run(int[] prompt)
    {
        Stats = null;
        IReadOnlySet<int> eos = _session.Model.Tokenizer.EosIds;
        long start = Stopwatch.GetTimestamp();

        // Reuse what the cache holds, but always compute the last prompt token to get its logits.
        int reused = Math.Min(_session.Cache.Length, prompt.Length - 1);
        _session.Cache.Truncate(reused);
        _session.Prefill(prompt.AsSpan(reused), reused, _logits);
        long prefilled = Stopwatch.GetTimestamp();
        if (_options.MaxTokens == 0)
        {
            Stats = new GenerationStats { PromptTokens = prompt.Length, ReusedTokens = reused, Prefill = Stopwatch.GetElapsedTime(start, prefilled), TimeToFirstToken = Stopwatch.GetElapsedTime(start, prefilled) };
            yield break;
        }

        int token = _sampler.Next(_logits);
        TimeSpan firstToken = Stopwatch.GetElapsedTime(start);
        yield return token;

        long decodeStart = Stopwatch.GetTimestamp();
        int generated = 1;
        int position = prompt.Length;
        while (generated < _options.MaxTokens && !(_options.StopAtEos && eos.Contains(token)))
        {
            _session.Decode(token, position++, _logits);
            token = _sampler.Next(_logits);
            generated++;
            yield return token;
        }

        Stats = new GenerationStats
        {
            PromptTokens = prompt.Length,
            ReusedTokens = reused,
            Prefill = Stopwatch.GetElapsedTime(start, prefilled),
            TimeToFirstToken = firstToken,
            DecodeTokens = generated - 1,
            Decode = Stopwatch.GetElapsedTime(decodeStart),
        };
    }
}
