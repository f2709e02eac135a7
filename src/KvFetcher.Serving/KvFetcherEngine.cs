using KvFetcher.Runtime;
using KvFetcher.Engine;
using KvFetcher.Fetch;
using KvFetcher.Serving.Chat;
using KvFetcher.Serving.Scheduling;
using KvFetcher.Store;

namespace KvFetcher.Serving;

/// <summary>
/// A model, its KV store and the scheduler that serves requests on it: what <c>kvfetch serve-llm</c> and the in-process
/// <see cref="Extensions.KvFetcherChatClient"/> share. Prompts whose prefix is in the store reuse it automatically;
/// chunks computed here are stored for everyone else using the same store.
/// </summary>
public sealed class KvFetcherEngine : IAsyncDisposable
{
    private readonly LocalEngine _engine;
    private readonly IKvStore? _store;
    private readonly KvReuse? _reuse;
    private int _disposed;

    private KvFetcherEngine(KvFetcherOptions options, ServingSetup setup, LocalEngine engine, IKvStore? store)
    {
        IInferenceModel model = engine.Model;
        _engine = engine;
        Options = options;
        Model = model;
        _store = store;
        ModelId = options.ResolveModelId();
        Template = ChatTemplate.ForModel(model.Directory, model.Tokenizer);
        MaxPromptCharacters = (long)model.Config.MaxPositionEmbeddings
            * Math.Min(options.MaxPromptCharactersPerToken, model.Tokenizer.MaxCharactersPerToken);
        Metrics = new ServingMetrics();
        if (store is not null && setup.Reuse is not null)
        {
            _reuse = new KvReuse(model, store, setup.Reuse, restorer: engine.Restorer);
        }

        Scheduler = new EngineScheduler(model, _reuse, setup.Scheduler, Metrics);
    }

    public KvFetcherOptions Options { get; }

    public IInferenceModel Model { get; }

    /// <summary>Which engine and decoders run the model, and why.</summary>
    public string EngineChoice => _engine.Choice;

    /// <summary>The name clients use for the model.</summary>
    public string ModelId { get; }

    public ChatTemplate Template { get; }

    /// <summary>
    /// The longest prompt text (characters, after the chat template) that is tokenized at all; a longer one cannot fit
    /// the context (see <see cref="KvFetcherOptions.MaxPromptCharactersPerToken"/>) and is refused before any work.
    /// </summary>
    public long MaxPromptCharacters { get; }

    public ServingMetrics Metrics { get; }

    public EngineScheduler Scheduler { get; }

    /// <summary>Whether prompts are looked up in and published to a store.</summary>
    public bool ReuseEnabled => _reuse is not null;

    /// <summary>What the accuracy floor lets requests fetch, and why (null without reuse).</summary>
    public Fetch.Calibration.FloorDecision? Floor => _reuse?.Floor;

    /// <summary>The background publisher (null without reuse).</summary>
    public Fetch.Publishing.KvPublisher? Publisher => _reuse?.Publisher;

    /// <summary>
    /// Rates measured so far, the engine's own chunk compute times included: they set how long a request waits for its
    /// stored prefix before computing it (null without reuse).
    /// </summary>
    public Fetch.Fetching.FetchRates? Rates => _reuse?.Rates;

    /// <summary>Validates <paramref name="options"/>, loads the model (fp16 KV, as chunks are stored) and opens the store.</summary>
    public static async Task<KvFetcherEngine> StartAsync(KvFetcherOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ServingSetup setup = options.Map();
        LocalEngine engine = LocalEngine.Open(options.ModelDirectory, setup.Engine);
        IKvStore? store = null;
        try
        {
            if (setup.Reuse is not null && options.Store is not null)
            {
                store = await KvStores.OpenAsync(options.Store, options.StoreToken, cancellationToken: cancellationToken).ConfigureAwait(false);
            }

            return new KvFetcherEngine(options, setup, engine, store);
        }
        catch
        {
            if (store is not null)
            {
                await store.DisposeAsync().ConfigureAwait(false);
            }

            engine.Dispose();
            throw;
        }
    }

    /// <summary>The prompt tokens of a conversation, rendered with the model's <see cref="Template"/>.</summary>
    /// <exception cref="ArgumentException">The rendered prompt is longer than <see cref="MaxPromptCharacters"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled while tokenizing.</exception>
    public int[] EncodeChat(IReadOnlyList<ChatTurn> messages, CancellationToken cancellationToken = default) =>
        EncodeRenderedChat(Template.Render(messages), cancellationToken);

    /// <summary>The prompt tokens of plain text (BOS added as the tokenizer's config says).</summary>
    /// <exception cref="ArgumentException"><paramref name="prompt"/> is longer than <see cref="MaxPromptCharacters"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled while tokenizing.</exception>
    public int[] EncodeText(string prompt, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        CheckPromptLength(prompt.Length, nameof(prompt));
        return Model.Tokenizer.EncodeCancellable(prompt, addSpecial: true, cancellationToken);
    }

    /// <summary>The prompt tokens of a conversation already rendered with <see cref="Template"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="rendered"/> is longer than <see cref="MaxPromptCharacters"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled while tokenizing.</exception>
    public int[] EncodeRenderedChat(string rendered, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(rendered);
        CheckPromptLength(rendered.Length, nameof(rendered));
        return Model.Tokenizer.EncodeCancellable(rendered, Template.AddSpecialTokens, cancellationToken);
    }

    // A prompt that cannot fit the context is not tokenized at all.
    private void CheckPromptLength(int characters, string name)
    {
        if (characters > MaxPromptCharacters)
        {
            throw new ArgumentException(
                $"The prompt has {characters} characters, more than the {MaxPromptCharacters} that the model's context of {Model.Config.MaxPositionEmbeddings} tokens can hold.", name);
        }
    }

    /// <summary>Submits a request (see <see cref="EngineScheduler.Submit"/>).</summary>
    public Generation Submit(GenerationRequest request, CancellationToken cancellationToken = default) =>
        Scheduler.Submit(request, cancellationToken);

    /// <summary>Completes when every computed chunk queued so far has been stored (or failed to be).</summary>
    public Task WhenPublishedAsync() => _reuse?.Publisher.WhenIdleAsync() ?? Task.CompletedTask;

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await Scheduler.DisposeAsync().ConfigureAwait(false);
        if (_reuse is not null)
        {
            // Give chunks still being stored a moment; a store that is down must not hold the shutdown.
            await Task.WhenAny(_reuse.Publisher.WhenIdleAsync(), Task.Delay(TimeSpan.FromSeconds(5))).ConfigureAwait(false);
            await _reuse.DisposeAsync().ConfigureAwait(false);
        }

        if (_store is not null)
        {
            await _store.DisposeAsync().ConfigureAwait(false);
        }

        _engine.Dispose();
    }
}
