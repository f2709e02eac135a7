using System.Diagnostics;
using System.Threading.Channels;
using KvFetcher.Codecs;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Engine;
using KvFetcher.Fetch.Restoring;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Fetch.Scheduling.Strategies;
using KvFetcher.Fetch.Telemetry;
using KvFetcher.Store;
using Microsoft.Extensions.Logging;

namespace KvFetcher.Fetch.Fetching;

/// <summary>
/// The fetch side of one request: transfer -> decode -> restore, three stages joined by bounded channels, a fixed set
/// of slots (the memory cap, which also bounds the chunks in flight) and a fixed number of workers per stage. Chunks
/// are claimed one at a time through the fetch side of the request's <see cref="ChunkStrategy"/>, which decides the order,
/// the variant and when to stop (the meeting point with the engine); every state change goes through the request's
/// <see cref="ChunkBoard"/>. Any failure on a chunk (miss, timeout, stall, store error, corrupt or foreign
/// data) marks it <see cref="ChunkState.Failed"/> so the engine computes it; nothing is ever restored unverified. After
/// <see cref="MaxFailuresInARow"/> transfers in a row fail by error, deadline or stall (or are taken back by the engine
/// as slower than computing), the fetcher stops claiming: the store is not worth waiting for in this request.
/// </summary>
internal sealed class ChunkFetcher : IAsyncDisposable
{
    internal const int MaxFailuresInARow = 2;

    private readonly ContextPlan _plan;
    private readonly IKvStore _store;
    private readonly IKvCache _cache;
    private readonly FetchRates _rates;
    private readonly FetcherOptions _options;
    private readonly ChunkStrategy _strategy;
    private readonly ChunkBoard _board;
    private readonly bool _sharedCores;
    private readonly Timeline _timeline;
    private readonly ReuseTelemetry _telemetry;
    private readonly ILogger _logger;
    private readonly ChunkSlot[] _slots;
    private readonly Channel<ChunkSlot> _free;
    private readonly Channel<ChunkSlot> _decode;
    private readonly Channel<ChunkSlot> _restore;
    private readonly CancellationTokenSource _stop;
    private readonly Task _completion;
    private readonly KvVariant[] _tried;
    private readonly FetchOutcome[] _outcomes;
    private int _activeTransfers;
    private int _failuresInARow;
    private long _bytes;
    private int _restored;
    private int _failed;

    /// <param name="plan">The request's chunks.</param>
    /// <param name="store">Where they are fetched from.</param>
    /// <param name="cache">Where they are restored to.</param>
    /// <param name="restorer">How they are decoded and restored.</param>
    /// <param name="rates">Where transfer, decode and restore times are recorded.</param>
    /// <param name="options">Workers, deadlines.</param>
    /// <param name="strategy">Which chunk next, as which variant (its fetch side); its board holds every chunk's state.</param>
    /// <param name="sharedCores">Whether the engine computes on the host's cores (decode and restore times are then kept apart for while it computes).</param>
    /// <param name="timeline">Where the stages' spans go.</param>
    /// <param name="telemetry">Where restored chunks and fallbacks (with their causes) are reported.</param>
    /// <param name="slots">Chunk slots (the memory cap).</param>
    /// <param name="cancellationToken">Ends every stage.</param>
    public ChunkFetcher(ContextPlan plan, IKvStore store, IKvCache cache, IChunkRestorer restorer, FetchRates rates, FetcherOptions options, ChunkStrategy strategy,
        bool sharedCores, Timeline timeline, ReuseTelemetry telemetry, int slots, CancellationToken cancellationToken)
    {
        _plan = plan;
        _store = store;
        _cache = cache;
        _rates = rates;
        _options = options;
        _strategy = strategy;
        _board = strategy.Board;
        _sharedCores = sharedCores;
        _timeline = timeline;
        _telemetry = telemetry;
        _logger = telemetry.Logger;
        _stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        _tried = new KvVariant[_board.Chunks];
        _outcomes = new FetchOutcome[_board.Chunks];
        // The largest container any variant the board's ladder may pick can be for this chunk shape, so no stored chunk is refused for size.
        int containerCapacity = checked((int)_board.Ladder.Max(v => v.GetCodec().GetMaxContainerLength(plan.ChunkShape, plan.DType, v.Level)));
        _slots = new ChunkSlot[slots];
        _free = Channel.CreateBounded<ChunkSlot>(new BoundedChannelOptions(slots) { SingleWriter = false });
        for (int i = 0; i < slots; i++)
        {
            _slots[i] = new ChunkSlot(containerCapacity, restorer.CreateSlot(plan.ChunkShape, plan.DType));
            _free.Writer.TryWrite(_slots[i]);
        }

        _decode = Channel.CreateBounded<ChunkSlot>(new BoundedChannelOptions(slots) { SingleReader = options.DecodeWorkers == 1 });
        _restore = Channel.CreateBounded<ChunkSlot>(new BoundedChannelOptions(slots) { SingleReader = true });
        int transfers = Math.Min(options.TransfersInFlight, slots);
        var transferTasks = new Task[transfers];
        for (int i = 0; i < transfers; i++)
        {
            transferTasks[i] = Task.Run(TransferLoopAsync, CancellationToken.None);
        }

        var decodeTasks = new Task[options.DecodeWorkers];
        for (int i = 0; i < decodeTasks.Length; i++)
        {
            decodeTasks[i] = Task.Factory.StartNew(DecodeLoop, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        }

        Task restoreTask = Task.Factory.StartNew(RestoreLoop, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        _completion = RunAsync(transferTasks, decodeTasks, restoreTask);
    }

    /// <summary>Completes when every stage has stopped; after it no chunk changes state any more.</summary>
    public Task Completion => _completion;

    public long BytesFetched => Interlocked.Read(ref _bytes);

    public int RestoredChunks => Volatile.Read(ref _restored);

    public int FailedChunks => Volatile.Read(ref _failed);

    /// <summary>Transfers, decodes and restores in progress right now.</summary>
    public int InFlight => _slots.Length - _free.Reader.Count;

    /// <summary>The variant the fetcher tried for <paramref name="chunk"/> and what became of it; read after <see cref="Completion"/>.</summary>
    public (KvVariant Variant, FetchOutcome Outcome) OutcomeOf(int chunk) => (_tried[chunk], _outcomes[chunk]);

    /// <summary>Stops claiming chunks; work in flight finishes (or is cancelled) and <see cref="Completion"/> completes.</summary>
    public void StopClaiming() => _strategy.Stop();

    /// <summary>
    /// The engine took <paramref name="chunk"/> back from the fetcher (its transfer was slower than computing it): the
    /// transfer is cancelled if it is still running, and counts as a failure towards <see cref="MaxFailuresInARow"/>.
    /// Data that arrives for it anyway is dropped by the restore stage.
    /// </summary>
    public void Abandon(int chunk)
    {
        Interlocked.Increment(ref _failuresInARow);
        foreach (ChunkSlot slot in _slots)
        {
            if (Volatile.Read(ref slot.Transfer) is { } transfer && transfer.Chunk == chunk)
            {
                transfer.Abandon();
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        _strategy.Stop();
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await _completion.ConfigureAwait(false);
        }
        finally
        {
            foreach (ChunkSlot slot in _slots)
            {
                slot.Dispose();
            }

            _stop.Dispose();
        }
    }

    private async Task RunAsync(Task[] transfers, Task[] decoders, Task restorer)
    {
        try
        {
            try
            {
                await Task.WhenAll(transfers).ConfigureAwait(false);
            }
            finally
            {
                _decode.Writer.TryComplete();
            }

            try
            {
                await Task.WhenAll(decoders).ConfigureAwait(false);
            }
            finally
            {
                _restore.Writer.TryComplete();
            }

            await restorer.ConfigureAwait(false);
        }
        finally
        {
            // Anything still marked as being fetched (a stage stopped early, or failed) goes back to the engine, and
            // whoever waits learns that nothing more comes: every wait on the board has an end.
            for (int i = 0; i < _board.Chunks; i++)
            {
                if (_board.TryMove(i, ChunkState.Fetching, ChunkState.Failed))
                {
                    Interlocked.Increment(ref _failed);
                }
            }

            _board.EndFetch();
        }
    }

    private async Task TransferLoopAsync()
    {
        CancellationToken stop = _stop.Token;
        while (!stop.IsCancellationRequested)
        {
            ChunkSlot slot;
            try
            {
                slot = await _free.Reader.ReadAsync(stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            if (Volatile.Read(ref _failuresInARow) >= MaxFailuresInARow || !_strategy.TryClaim(InFlight - 1, out int chunk, out KvVariant variant))
            {
                _free.Writer.TryWrite(slot);
                return;
            }

            slot.Reset(chunk, variant, _strategy.LayerStartOf(chunk));
            _tried[chunk] = variant;
            if (!await TransferAsync(slot, stop).ConfigureAwait(false))
            {
                Fail(chunk);
                _free.Writer.TryWrite(slot);
                continue;
            }

            try
            {
                await _decode.Writer.WriteAsync(slot, stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                Fail(chunk);
                _free.Writer.TryWrite(slot);
                return;
            }
        }
    }

    /// <summary>Gets the chunk's container into the slot within the chunk deadline; false on any failure.</summary>
    private async Task<bool> TransferAsync(ChunkSlot slot, CancellationToken stop)
    {
        TimeSpan start = _timeline.Now;
        long t0 = Stopwatch.GetTimestamp();
        int concurrent = Interlocked.Increment(ref _activeTransfers);
        using var transfer = new TransferHandle(slot.Chunk, stop);
        transfer.CancelAfter(_options.ChunkTimeout);
        Volatile.Write(ref slot.Transfer, transfer);
        try
        {
            StoreRead read = slot.LayerStart == 0
                ? await _store.GetAsync(_plan.ObjectKeyOf(slot.Chunk, slot.Variant), slot, ByteRange.All, transfer.Token).ConfigureAwait(false)
                : await TransferLayersAsync(slot, transfer.Token).ConfigureAwait(false);
            if (!read.Found)
            {
                FetchLog.ChunkMissing(_logger, slot.Chunk, slot.Variant);
                return Failed(slot, FetchOutcome.Missing); // evicted or found corrupt since the lookup: the store answered
            }

            Volatile.Write(ref _failuresInARow, 0);
            double seconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            _rates.ObserveTransfer(read.BytesWritten, seconds, concurrent);
            Interlocked.Add(ref _bytes, read.BytesWritten);
            _timeline.Add(PrefillStage.Transfer, slot.Chunk, slot.Variant.ToString(), start, read.BytesWritten);
            return true;
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            return false; // the request is over
        }
        catch (OperationCanceledException)
        {
            // The chunk deadline, or the engine took the chunk back (counted by Abandon): either way too slow.
            if (transfer.Abandoned)
            {
                _outcomes[slot.Chunk] = FetchOutcome.TimedOut;
                _telemetry.TakenBack();
                return false;
            }

            FetchLog.ChunkTimedOut(_logger, slot.Chunk, slot.Variant, _options.ChunkTimeout.TotalMilliseconds);
            CountFailureInARow();
            return Failed(slot, FetchOutcome.TimedOut);
        }
        catch (KvStoreException ex)
        {
            // Down, failing, stalled, or refused at once by the store's circuit breaker.
            FetchLog.ChunkStoreError(_logger, slot.Chunk, slot.Variant, ex.Message, ex);
            CountFailureInARow();
            return Failed(slot, FetchOutcome.StoreError);
        }
        catch (InvalidDataException ex)
        {
            FetchLog.ChunkCorrupt(_logger, slot.Chunk, slot.Variant, ex.Message, ex);
            return Failed(slot, FetchOutcome.Corrupt); // larger than any container of this chunk
        }
        catch (InvalidKvDataException ex)
        {
            FetchLog.ChunkCorrupt(_logger, slot.Chunk, slot.Variant, ex.Message, ex);
            return Failed(slot, FetchOutcome.Corrupt); // a layer range's head: malformed, corrupt, not layer-addressable or not this chunk's
        }
        catch (ArgumentOutOfRangeException ex)
        {
            FetchLog.ChunkCorrupt(_logger, slot.Chunk, slot.Variant, ex.Message, ex);
            return Failed(slot, FetchOutcome.Corrupt); // stored in layer groups the split does not fall on
        }
        finally
        {
            Volatile.Write(ref slot.Transfer, null);
            Interlocked.Decrement(ref _activeTransfers);
        }
    }

    /// <summary>
    /// Reads the upper layers [<see cref="ChunkSlot.LayerStart"/>, layers) of a layer-addressable container into the slot
    /// in two ranged reads: its head (header and layer table, checked against the chunk's expectation), then the bytes of
    /// those layers' groups (checked by the decode stage). The whole object's length comes with the first read.
    /// </summary>
    private async Task<StoreRead> TransferLayersAsync(ChunkSlot slot, CancellationToken cancellationToken)
    {
        ObjectKey key = _plan.ObjectKeyOf(slot.Chunk, slot.Variant);
        int headSize = ChunkLayerTable.HeadSizeOf(_plan.ChunkShape, _plan.LayerGroup);
        StoreRead head = await _store.GetAsync(key, slot, new ByteRange(0, headSize), cancellationToken).ConfigureAwait(false);
        if (!head.Found)
        {
            return head;
        }

        ChunkLayerTable table = ChunkLayerTable.ReadHead(slot.Container.Span, head.ObjectLength, _plan.Expectation(slot.Chunk));
        (long offset, long length) = table.RangeOf(slot.LayerStart, _plan.ChunkShape.Layers);
        slot.Table = table;
        slot.HeadLength = (int)head.BytesWritten;
        StoreRead layers = await _store.GetAsync(key, slot, new ByteRange(offset, length), cancellationToken).ConfigureAwait(false);
        return layers with { BytesWritten = head.BytesWritten + layers.BytesWritten };
    }

    private void DecodeLoop()
    {
        ChannelReader<ChunkSlot> reader = _decode.Reader;
        while (WaitToRead(reader))
        {
            while (reader.TryRead(out ChunkSlot? slot))
            {
                TimeSpan start = _timeline.Now;
                long t0 = Stopwatch.GetTimestamp();
                bool decoded;
                try
                {
                    if (slot.Table is { } table)
                    {
                        slot.Decoded.DecodeLayers(table, slot.Container[slot.HeadLength..], slot.LayerStart, slot.Variant);
                    }
                    else
                    {
                        slot.Decoded.Decode(slot.Container, _plan.Expectation(slot.Chunk), slot.Variant);
                    }

                    decoded = true;
                }
                catch (ChunkAuthenticationException ex)
                {
                    // Intact but not sealed for this tenant under this deployment's secret: never restored.
                    FetchLog.ChunkUnauthentic(_logger, slot.Chunk, slot.Variant, ex);
                    decoded = Failed(slot, FetchOutcome.Unauthentic);
                }
                catch (InvalidKvDataException ex)
                {
                    // Corrupt, or another chunk/model/tenant's container: never restored.
                    FetchLog.ChunkCorrupt(_logger, slot.Chunk, slot.Variant, ex.Message, ex);
                    decoded = Failed(slot, FetchOutcome.Corrupt);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    // The decoder failed (e.g. a GPU decoder error): the engine computes the chunk.
                    FetchLog.ChunkDecodeFailed(_logger, slot.Chunk, slot.Variant, ex);
                    decoded = Failed(slot, FetchOutcome.RestoreFailed);
                }

                if (!decoded)
                {
                    Fail(slot.Chunk);
                    _free.Writer.TryWrite(slot);
                    continue;
                }

                double seconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
                string variant = slot.Variant.ToString();
                if (slot.LayerStart == 0)
                {
                    // A layer range is a part of a chunk: its size and decode time would skew the variant's per-chunk rates.
                    _rates.ObserveVariant(slot.Variant, slot.Container.Length, _plan.ChunkBytes, seconds, EngineBusy);
                }

                _telemetry.Decoded(variant, seconds);
                _timeline.Add(PrefillStage.Decode, slot.Chunk, variant, start);

                // The restore channel has a place for every slot, so this never blocks.
                if (!_restore.Writer.TryWrite(slot))
                {
                    Fail(slot.Chunk);
                    _free.Writer.TryWrite(slot);
                }
            }
        }
    }

    private void RestoreLoop()
    {
        ChannelReader<ChunkSlot> reader = _restore.Reader;
        while (WaitToRead(reader))
        {
            while (reader.TryRead(out ChunkSlot? slot))
            {
                int chunk = slot.Chunk;

                // The engine may have taken the chunk back (it predicted computing it was faster): then drop the data.
                if (_board.TryMove(chunk, ChunkState.Fetching, ChunkState.Restoring))
                {
                    TimeSpan start = _timeline.Now;
                    long t0 = Stopwatch.GetTimestamp();
                    int first = chunk * _plan.ChunkTokens;
                    if (TryRestore(slot, first))
                    {
                        string variant = slot.Variant.ToString();
                        if (slot.LayerStart == 0)
                        {
                            _rates.ObserveRestore(Stopwatch.GetElapsedTime(t0).TotalSeconds, EngineBusy);
                        }

                        _timeline.Add(PrefillStage.Restore, chunk, variant, start);
                        _telemetry.Restored(variant, slot.Container.Length);
                        _outcomes[chunk] = FetchOutcome.Restored;
                        Interlocked.Increment(ref _restored);
                        _board.Move(chunk, ChunkState.Restoring, ChunkState.Filled);
                    }
                    else
                    {
                        // Positions the restore may have written are not marked filled; the engine computes them over.
                        _outcomes[chunk] = FetchOutcome.RestoreFailed;
                        _telemetry.Fallback(FetchOutcome.RestoreFailed);
                        Interlocked.Increment(ref _failed);
                        _board.Move(chunk, ChunkState.Restoring, ChunkState.Failed);
                    }
                }

                _free.Writer.TryWrite(slot);
            }
        }
    }

    private bool TryRestore(ChunkSlot slot, int first)
    {
        try
        {
            if (slot.LayerStart > 0)
            {
                slot.Decoded.RestoreLayers(_cache, first, first + _plan.ChunkTokens, slot.LayerStart);
            }
            else
            {
                slot.Decoded.Restore(_cache, first, first + _plan.ChunkTokens);
            }

            return true;
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            FetchLog.ChunkRestoreFailed(_logger, slot.Chunk, slot.Variant, ex);
            return false; // e.g. a device error while restoring
        }
    }

    /// <summary>Records why <paramref name="slot"/>'s chunk is computed instead (the caller logged the cause); always false.</summary>
    private bool Failed(ChunkSlot slot, FetchOutcome outcome)
    {
        _outcomes[slot.Chunk] = outcome;
        _telemetry.Fallback(outcome);
        return false;
    }

    private void CountFailureInARow()
    {
        if (Interlocked.Increment(ref _failuresInARow) == MaxFailuresInARow)
        {
            FetchLog.FetcherGaveUp(_logger, MaxFailuresInARow);
        }
    }

    private void Fail(int chunk)
    {
        if (_board.TryMove(chunk, ChunkState.Fetching, ChunkState.Failed))
        {
            Interlocked.Increment(ref _failed);
        }
    }

    /// <summary>Whether the engine computes right now on the cores decode and restore run on.</summary>
    private bool EngineBusy => _sharedCores && _board.EngineComputing;

    private static bool WaitToRead(ChannelReader<ChunkSlot> reader)
    {
        ValueTask<bool> wait = reader.WaitToReadAsync();
        return wait.IsCompletedSuccessfully ? wait.Result : wait.AsTask().GetAwaiter().GetResult();
    }
}
