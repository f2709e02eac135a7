using System.Diagnostics.Metrics;
using KvFetcher.Runtime;
using KvFetcher.Engine;
using KvFetcher.Fetch;
using KvFetcher.Serving.Chat;
using KvFetcher.Serving.Scheduling;
using KvFetcher.Store;
using KvFetcher.Store.Telemetry;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvFetcher.Serving;

/// <summary>
/// A model, its KV store and the scheduler that serves requests on it: what <c>kvfetch serve-llm</c> and the in-process
/// <see cref="Extensions.KvFetcherChatClient"/> share. Prompts whose prefix is in the store reuse it automatically;
/// chunks computed here are stored for everyone else using the same store. It logs through the
/// <see cref="ILoggerFactory"/> and records on a <c>KvFetcher</c> meter of the <see cref="IMeterFactory"/> it is given
/// (nowhere, and a meter of its own, without). Dispose it either way: <see cref="DisposeAsync"/>, or <see cref="Dispose"/>
/// (which waits for the same shutdown) for a plain <c>ServiceProvider</c>.
/// </summary>
public sealed class KvFetcherEngine : IAsyncDisposable, IDisposable
{
    private readonly LocalEngine _engine;
    private readonly IKvStore? _store;
    private readonly KvReuse? _reuse;
    private readonly Meter? _ownMeter;
    private int _disposed;

    private KvFetcherEngine(KvFetcherOptions options, ServingSetup setup, LocalEngine engine, IKvStore? store, ILoggerFactory loggerFactory, Meter meter, bool ownsMeter)
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
        Meter = meter;
        _ownMeter = ownsMeter ? meter : null;
        Metrics = new ServingMetrics(meter);
        if (store is not null && setup.Reuse is not null)
        {
            _reuse = new KvReuse(model, store, setup.Reuse, restorer: engine.Restorer, loggerFactory: loggerFactory, meter: meter);
        }

        ILogger logger = loggerFactory.CreateLogger<KvFetcherEngine>();
        Scheduler = new EngineScheduler(model, _reuse, setup.Scheduler, Metrics, loggerFactory.CreateLogger<EngineScheduler>());
        ObserveEngine(meter);
        ServingLog.EngineStarted(logger, ModelId, engine.Choice, store?.Description ?? "none");
        if (_reuse?.LadderWarning is { } warning)
        {
            ServingLog.LadderWarning(logger, warning);
        }
    }

    /// <summary>The <c>KvFetcher</c> meter the engine, its fetcher and its store record on.</summary>
    public Meter Meter { get; }

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
    public static Task<KvFetcherEngine> StartAsync(KvFetcherOptions options, CancellationToken cancellationToken = default) =>
        StartAsync(options, loggerFactory: null, meterFactory: null, cancellationToken);

    /// <summary>
    /// As <see cref="StartAsync(KvFetcherOptions, CancellationToken)"/>, logging through <paramref name="loggerFactory"/>
    /// and recording on the <c>KvFetcher</c> meter of <paramref name="meterFactory"/> (e.g. a host's).
    /// </summary>
    public static async Task<KvFetcherEngine> StartAsync(KvFetcherOptions options, ILoggerFactory? loggerFactory, IMeterFactory? meterFactory,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        loggerFactory ??= NullLoggerFactory.Instance;
        ServingSetup setup = options.Map();
        // Loading maps the weights and may hash them (seconds): off the caller's thread.
        LocalEngine engine = await Task.Run(() => LocalEngine.Open(options.ModelDirectory, setup.Engine), cancellationToken).ConfigureAwait(false);
        InstrumentedKvStore? store = null;
        Meter meter = meterFactory?.Create(KvFetcherMeter.Name) ?? new Meter(KvFetcherMeter.Name);
        try
        {
            if (setup.Reuse is not null && options.Store is not null)
            {
                IKvStore opened = await KvStores.OpenAsync(options.Store, loggerFactory, options.StoreToken, cancellationToken: cancellationToken).ConfigureAwait(false);
                store = new InstrumentedKvStore(opened, meter, loggerFactory.CreateLogger<InstrumentedKvStore>());
            }

            return new KvFetcherEngine(options, setup, engine, store, loggerFactory, meter, ownsMeter: meterFactory is null);
        }
        catch
        {
            if (store is not null)
            {
                await store.DisposeAsync().ConfigureAwait(false);
            }

            if (meterFactory is null)
            {
                meter.Dispose();
            }

            engine.Dispose();
            throw;
        }
    }

    // The engine's state as observable instruments: requests holding a session, queued and fetching, KV memory in use,
    // the publisher's failures, and the model (a constant 1 labelled with the model and the engine).
    private void ObserveEngine(Meter meter)
    {
        meter.CreateObservableGauge("kvfetch.llm.active_sessions", () => Scheduler.ActiveSessions, "{request}", "Requests holding a KV cache.");
        meter.CreateObservableGauge("kvfetch.llm.queued_requests", () => Scheduler.QueuedRequests, "{request}", "Requests waiting for a session.");
        meter.CreateObservableGauge("kvfetch.llm.fetching_requests", () => Scheduler.FetchingRequests, "{request}", "Requests in the waiting queue (prefix being fetched).");
        meter.CreateObservableGauge("kvfetch.llm.kv_cache.usage", () => Scheduler.KvBytesInUse, "By", "KV cache memory held by the sessions of active requests.");
        var model = new KeyValuePair<string, object?>[] { new("model", ModelId), new("engine", _engine.Kind == Runtime.EngineKind.Cuda ? "cuda" : "cpu") };
        meter.CreateObservableGauge("kvfetch.llm.model_info", () => new Measurement<int>(1, model), description: "The model served (label model) and the engine running it (label engine).");
        if (_reuse is not null)
        {
            KvReuse reuse = _reuse;
            meter.CreateObservableCounter("kvfetch.llm.publish_failures", () => reuse.Publisher.Failed, "{container}", "Chunk variants the store failed to take.");
            meter.CreateObservableCounter("kvfetch.llm.publish_dropped", () => reuse.Publisher.Dropped, "{chunk}", "Chunks not stored because the publish queue was full.");
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

    /// <summary>The same shutdown as <see cref="DisposeAsync"/>, waited for (for containers that dispose synchronously).</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

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
        Metrics.Dispose();
        _ownMeter?.Dispose();
    }
}
