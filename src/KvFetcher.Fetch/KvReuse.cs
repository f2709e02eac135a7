using System.Diagnostics;
using System.Diagnostics.Metrics;
using KvFetcher.Engine;
using KvFetcher.Fetch.Calibration;
using KvFetcher.Fetch.Fetching;
using KvFetcher.Fetch.Publishing;
using KvFetcher.Fetch.Restoring;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Fetch.Telemetry;
using KvFetcher.Store;
using KvFetcher.Store.Telemetry;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvFetcher.Fetch;

/// <summary>
/// Remote KV reuse for one model and one store: a prefill looks up the longest stored prefix of the prompt, obtains it by
/// the chosen <see cref="PrefillStrategy"/> (computing, fetching, or both meeting in the middle), computes the rest and
/// the first token, then stores the chunks it computed in the background. The answer never depends on the store: a
/// chunk that cannot be fetched and verified in time is computed, and a store that is down only turns hits into
/// computation.
/// </summary>
public sealed class KvReuse : IAsyncDisposable
{
    private readonly IInferenceModel _model;
    private readonly RunContext _run;
    private readonly Meter? _ownMeter;

    /// <param name="model">The engine's model (its KV storage dtype is the dtype chunks are stored in).</param>
    /// <param name="store">Where chunks live.</param>
    /// <param name="options">Chunking, ladder, deadlines.</param>
    /// <param name="rates">Measured rates to start from (shared by several instances over one engine); a new set by default.</param>
    /// <param name="restorer">How fetched chunks are decoded into the engine's cache; the CPU decoders by default.</param>
    /// <param name="loggerFactory">Where chunk fallbacks (with their causes) and publishing failures are logged; nowhere by default.</param>
    /// <param name="meter">
    /// Where restored chunks per variant, fallbacks per reason and decode times are counted (a <c>KvFetcher</c> meter, e.g.
    /// from the host's <see cref="IMeterFactory"/>); a meter of this instance's own by default.
    /// </param>
    public KvReuse(IInferenceModel model, IKvStore store, ReuseOptions? options = null, FetchRates? rates = null, IChunkRestorer? restorer = null,
        ILoggerFactory? loggerFactory = null, Meter? meter = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(store);
        options ??= new ReuseOptions();
        options.Validate();

        // The model's kvtc transform, when calibration fitted one to this model (a stale one is not loaded; kvtc then stays unusable).
        if (!string.IsNullOrEmpty(model.Directory) && options.Ladder.Any(v => v.Codec == Core.CodecId.Kvtc))
        {
            _ = TransformCalibration.TryLoad(model.Directory, model.Fingerprint, out _);
        }

        // Variants whose codec cannot run here (e.g. the video shim is missing) are left out, with one warning line.
        IReadOnlyList<KvVariant> usable = UsableLadder.Of(options.Ladder, out string? warning);
        if (usable.Count == 0)
        {
            throw new ArgumentException($"No variant of the ladder can be used here: {warning}", nameof(options));
        }

        _model = model;
        Store = store;
        Options = warning is null ? options : options with { Ladder = usable };
        LadderWarning = warning;
        loggerFactory ??= NullLoggerFactory.Instance;
        if (meter is null)
        {
            _ownMeter = new Meter(KvFetcherMeter.Name);
            meter = _ownMeter;
        }

        Publisher = new KvPublisher(store, options.Ladder, workers: Options.PublishWorkers, options: Options.Publishing, logger: loggerFactory.CreateLogger<KvPublisher>());
        Rates = rates ?? new FetchRates();
        Restorer = restorer ?? HostChunkRestorer.Instance;

        // The accuracy floor: lossy variants only where the model's own calibration profile shows they pass it.
        AccuracyFloor floor = Options.EffectiveFloor;
        CalibrationProfile? profile = Options.Profile;
        string? problem = null;
        if (profile is null && !floor.LosslessOnly && Options.Ladder.Any(v => !v.IsLossless))
        {
            profile = string.IsNullOrEmpty(model.Directory)
                ? null
                : CalibrationProfile.TryLoadFrom(model.Directory, out problem);
            problem ??= profile is null ? "no calibration profile (the model has no directory)" : null;
        }

        Floor = floor.Decide(Options.Ladder, profile, profile is null ? default : model.Fingerprint, problem);
        FetchLadder = Floor.Allowed;

        // Each stage gets its part of the options, split once here.
        _run = new RunContext(store, Rates, Restorer, Options.Fetcher, new(Options.QualitySlack, Options.LosslessOnly, Options.DecodeWorkers, Floor), Options.LookupDeadline, model.ComputesOnHostCores,
            new ReuseTelemetry(meter, loggerFactory.CreateLogger<KvReuse>()));
    }

    /// <summary>What the accuracy floor allows of the ladder for this model, and why (<see cref="FloorDecision.Describe"/> prints it).</summary>
    public FloorDecision Floor { get; }

    /// <summary>
    /// The ladder's variants ours and the server's waiting queue may fetch: those within the accuracy floor (lossless ones
    /// only, unless the model's calibration profile shows a lossy one passes). Every variant of the ladder is still stored.
    /// </summary>
    public IReadOnlyList<KvVariant> FetchLadder { get; }

    public IKvStore Store { get; }

    public ReuseOptions Options { get; }

    /// <summary>One line naming the variants left out of the ladder because their codec cannot run here, or null.</summary>
    public string? LadderWarning { get; }

    /// <summary>Rates measured so far (they drive the adaptive strategy's predictions).</summary>
    public FetchRates Rates { get; }

    public KvPublisher Publisher { get; }

    /// <summary>How fetched chunks are decoded and restored into the engine's cache.</summary>
    public IChunkRestorer Restorer { get; }

    /// <summary>The chunk keys of a prompt under this model and tenant.</summary>
    public ContextPlan Plan(int[] tokens) => Plan(tokens, Options.TenantSalt);

    /// <summary>
    /// The chunk keys of a prompt under this model and <paramref name="tenantSalt"/>, for one instance serving many
    /// tenants (a server salts each request with its caller's tenant; <see cref="ReuseOptions.TenantSalt"/> is ignored).
    /// </summary>
    public ContextPlan Plan(int[] tokens, string tenantSalt) =>
        ContextPlan.Create(_model.Fingerprint, tenantSalt, tokens, Options.ChunkTokens, _model.Config.NumLayers, _model.Config.NumKvHeads,
            _model.Config.HeadDim, _model.KvStorageDType, Options.Authenticator, Options.LayerGroup);

    /// <summary>
    /// Prefills <paramref name="tokens"/> into <paramref name="session"/> (which is reset first) and writes the last
    /// token's logits to <paramref name="lastLogits"/>. With <paramref name="publish"/>, chunks computed here are stored
    /// afterwards in the background.
    /// </summary>
    public async Task<PrefillReport> PrefillAsync(IInferenceSession session, int[] tokens, PrefillStrategy strategy, float[] lastLogits,
        bool publish = true, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(strategy);
        ArgumentNullException.ThrowIfNull(lastLogits);
        CheckSession(session);

        long t0 = Stopwatch.GetTimestamp();
        ContextPlan plan = Plan(tokens);
        PrefillRun run = await PrefillRun.StartAsync(_run, session, plan, LadderFor(strategy), strategy.Mode, strategy.Pipelined, t0, cancellationToken).ConfigureAwait(false);
        try
        {
            await run.ComputeAlongAsync(lastLogits, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await run.DisposeAsync().ConfigureAwait(false);
        }

        TimeSpan ttft = Stopwatch.GetElapsedTime(t0);
        int first = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(lastLogits.AsSpan(0, _model.Config.VocabSize));

        // Store what this request computed, off the response path.
        if (publish)
        {
            run.Publish(Publisher);
        }

        return run.ToPrefillReport(strategy, ttft, first);
    }

    /// <summary>
    /// Starts the prefill of <paramref name="plan"/>'s prompt into <paramref name="session"/> (reset first) for an engine
    /// loop that serves many requests: looks up the stored prefix and starts the fetcher on it by
    /// <paramref name="strategy"/>; the loop then takes the engine's steps (<see cref="ReusePrefill.NextStep"/>) between other
    /// requests' steps. <paramref name="wake"/> is called whenever the fetch side changes something the engine may be
    /// waiting for. The fetcher runs until the returned prefill is disposed or <paramref name="cancellationToken"/> is
    /// cancelled.
    /// </summary>
    public async Task<ReusePrefill> BeginPrefillAsync(IInferenceSession session, ContextPlan plan, PrefillStrategy strategy, Action? wake = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(strategy);
        CheckSession(session);
        PrefillRun run = await PrefillRun.StartAsync(_run, session, plan, LadderFor(strategy), strategy.Mode, strategy.Pipelined, Stopwatch.GetTimestamp(),
            cancellationToken, wake).ConfigureAwait(false);
        return new ReusePrefill(run, strategy, this);
    }

    /// <summary>
    /// Stores <paramref name="tokens"/> ahead of time (what <c>kvfetch warm</c> does): prefills them, reusing what is
    /// stored already, and returns once every chunk it computed is stored (or failed to be, see <see cref="Publisher"/>).
    /// </summary>
    public async Task<PrefillReport> WarmAsync(int[] tokens, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        using IInferenceSession session = _model.CreateSession(tokens.Length);
        PrefillReport report = await PrefillAsync(session, tokens, PrefillStrategy.Adaptive, new float[_model.Config.VocabSize],
            publish: true, cancellationToken).ConfigureAwait(false);
        await Publisher.WhenIdleAsync().ConfigureAwait(false);
        return report;
    }

    /// <summary>
    /// Fetches the stored prefix of <paramref name="tokens"/> as <paramref name="variant"/> into <paramref name="session"/>
    /// (reset first) without using the engine, for a scheduler that computes other requests meanwhile. Returns the
    /// tokens now filled from position 0 (<see cref="IKvCache.Length"/>); the caller computes the rest from there.
    /// </summary>
    public async Task<int> RestoreAsync(IInferenceSession session, int[] tokens, KvVariant variant, CancellationToken cancellationToken = default) =>
        (await FetchPrefixAsync(session, Plan(tokens), variant, cancellationToken).ConfigureAwait(false)).ReusedTokens;

    /// <summary>
    /// Fetches the stored prefix of <paramref name="plan"/> as <paramref name="variant"/> into <paramref name="session"/>
    /// (reset first) without using the engine, and reports what it did. Positions [0, <see cref="RestoreReport.ReusedTokens"/>)
    /// are filled afterwards; the caller computes the rest from there (and may publish the chunks it computes through
    /// <see cref="Publisher"/>). A store that is down or slow only shortens the reused prefix.
    /// </summary>
    public Task<RestoreReport> FetchPrefixAsync(IInferenceSession session, ContextPlan plan, KvVariant variant, CancellationToken cancellationToken = default) =>
        FetchPrefixCoreAsync(session, plan, [variant], cancellationToken);

    /// <summary>
    /// Like <see cref="FetchPrefixAsync(IInferenceSession, ContextPlan, KvVariant, CancellationToken)"/>, fetching each
    /// chunk as whichever of <paramref name="ladder"/>'s stored variants is predicted to arrive fastest from the rates
    /// measured so far (the most accurate within <see cref="ReuseOptions.QualitySlack"/> of it): a request adapts to the
    /// link and the decoders it meets. Only the variants within the accuracy floor (<see cref="Floor"/>) are fetched; when
    /// none is, nothing is fetched and the caller computes the prefix.
    /// </summary>
    public Task<RestoreReport> FetchPrefixAsync(IInferenceSession session, ContextPlan plan, IReadOnlyList<KvVariant> ladder, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(ladder);
        if (ladder.Count is 0 or > 30)
        {
            throw new ArgumentException($"A ladder holds 1 to 30 variants; got {ladder.Count}.", nameof(ladder));
        }

        return FetchPrefixCoreAsync(session, plan, [.. ladder.Where(Floor.Allows)], cancellationToken);
    }

    private async Task<RestoreReport> FetchPrefixCoreAsync(IInferenceSession session, ContextPlan plan, IReadOnlyList<KvVariant> ladder, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(plan);
        CheckSession(session);

        long t0 = Stopwatch.GetTimestamp();
        PrefillRun run = await PrefillRun.StartAsync(_run, session, plan, ladder, PrefillMode.FetchOnly, pipelined: true, t0, cancellationToken).ConfigureAwait(false);
        try
        {
            // The request waits at most about as long as computing the prefix would take (PrefixWaitFactor times the
            // prediction); then it keeps what arrived and the engine computes the rest.
            await run.FetchOffEngineAsync(PrefixWait(plan, run.Stored) - Stopwatch.GetElapsedTime(t0), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await run.DisposeAsync().ConfigureAwait(false);
        }

        return run.ToRestoreReport(Stopwatch.GetElapsedTime(t0));
    }

    public async ValueTask DisposeAsync()
    {
        await Publisher.DisposeAsync().ConfigureAwait(false);
        _ownMeter?.Dispose();
    }

    private IReadOnlyList<KvVariant> LadderFor(PrefillStrategy strategy) => strategy.Mode switch
    {
        PrefillMode.ComputeOnly => [],
        PrefillMode.Adaptive or PrefillMode.LayerSplit => FetchLadder, // ours-layer may take ours' plan, over the whole ladder
        _ => [strategy.Variant ?? throw new ArgumentException($"Strategy {strategy.Mode} needs a variant.", nameof(strategy))],
    };

    /// <summary>How long a request off the engine waits for its <paramref name="stored"/> chunks: the predicted compute time of them, scaled.</summary>
    private TimeSpan PrefixWait(ContextPlan plan, int stored)
    {
        double seconds = 0;
        for (int chunk = 0; chunk < stored; chunk++)
        {
            seconds += Rates.ComputeSeconds(chunk, plan.ChunkTokens);
        }

        return TimeSpan.FromSeconds(Math.Max(0.25, seconds * Options.PrefixWaitFactor));
    }

    private void CheckSession(IInferenceSession session)
    {
        // The same model object, or one seen through a wrapper (same weights and configuration, same KV storage):
        // chunks are keyed by the fingerprint, so its KV is what this reuse stores and restores.
        if (session.Model != _model && (session.Model.Fingerprint != _model.Fingerprint || session.Model.KvStorageDType != _model.KvStorageDType))
        {
            throw new ArgumentException("The session belongs to another model.", nameof(session));
        }
    }
}
