using Microsoft.Extensions.Logging;

namespace KvFetcher.Fetch.Telemetry;

/// <summary>
/// The fetcher's and publisher's log events (ids 1300-1399; see <c>KvFetcher.Hosting.HostingLog</c> for the ranges):
/// every stored chunk that is computed instead of restored says why, with the exception that caused it.
/// </summary>
internal static partial class FetchLog
{
    [LoggerMessage(EventId = 1301, EventName = "ChunkMissing", Level = LogLevel.Information, Message = "Chunk {Chunk} ({Variant}) is no longer in the store; computing it")]
    public static partial void ChunkMissing(ILogger logger, int chunk, KvVariant variant);

    [LoggerMessage(EventId = 1302, EventName = "ChunkTimedOut", Level = LogLevel.Information, Message = "Chunk {Chunk} ({Variant}) did not arrive within {TimeoutMs} ms; computing it")]
    public static partial void ChunkTimedOut(ILogger logger, int chunk, KvVariant variant, double timeoutMs);

    [LoggerMessage(EventId = 1303, EventName = "ChunkStoreError", Level = LogLevel.Warning, Message = "Chunk {Chunk} ({Variant}): the store failed ({Reason}); computing it")]
    public static partial void ChunkStoreError(ILogger logger, int chunk, KvVariant variant, string reason, Exception exception);

    [LoggerMessage(EventId = 1304, EventName = "ChunkCorrupt", Level = LogLevel.Warning, Message = "Chunk {Chunk} ({Variant}) failed verification ({Reason}); computing it")]
    public static partial void ChunkCorrupt(ILogger logger, int chunk, KvVariant variant, string reason, Exception exception);

    [LoggerMessage(EventId = 1305, EventName = "ChunkUnauthentic", Level = LogLevel.Warning,
        Message = "Chunk {Chunk} ({Variant}) failed its MAC (forged, another tenant's, or sealed under another secret); computing and replacing it")]
    public static partial void ChunkUnauthentic(ILogger logger, int chunk, KvVariant variant, Exception exception);

    [LoggerMessage(EventId = 1306, EventName = "ChunkDecodeFailed", Level = LogLevel.Warning, Message = "Chunk {Chunk} ({Variant}): the decoder failed; computing it")]
    public static partial void ChunkDecodeFailed(ILogger logger, int chunk, KvVariant variant, Exception exception);

    [LoggerMessage(EventId = 1307, EventName = "ChunkRestoreFailed", Level = LogLevel.Warning, Message = "Chunk {Chunk} ({Variant}): the restore into the KV cache failed; computing it")]
    public static partial void ChunkRestoreFailed(ILogger logger, int chunk, KvVariant variant, Exception exception);

    [LoggerMessage(EventId = 1308, EventName = "FetcherGaveUp", Level = LogLevel.Information, Message = "{Failures} chunk transfers in a row failed; the fetcher stops claiming chunks for this request")]
    public static partial void FetcherGaveUp(ILogger logger, int failures);

    [LoggerMessage(EventId = 1309, EventName = "LookupFailed", Level = LogLevel.Warning, Message = "Lookup of {Chunks} chunks failed ({Reason}); computing the whole prompt")]
    public static partial void LookupFailed(ILogger logger, int chunks, string reason);

    [LoggerMessage(EventId = 1310, EventName = "OursLayerPlan", Level = LogLevel.Debug,
        Message = "ours-layer takes {Plan}: predicted ours {OursMs:0.0} ms (meeting at chunk {OursChunk}, {OursVariant}), layer split {SplitMs:0.0} ms (chunk {SplitChunk}, {SplitLayers} lower layers computed, {SplitVariant})")]
    public static partial void OursLayerPlan(ILogger logger, string? plan, double oursMs, int oursChunk, string oursVariant, double splitMs, int splitChunk, int splitLayers, string splitVariant);

    [LoggerMessage(EventId = 1351, EventName = "PublishFailed", Level = LogLevel.Warning, Message = "Publisher: {Reason}")]
    public static partial void PublishFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 1352, EventName = "PublishBackOff", Level = LogLevel.Warning,
        Message = "Publisher: {Failures}+ puts to {Store} failed in a row; skipping its queue for {BackOffSeconds} s (last: {LastError})")]
    public static partial void PublishBackOff(ILogger logger, int failures, string store, double backOffSeconds, string? lastError);

    [LoggerMessage(EventId = 1353, EventName = "PublishDropped", Level = LogLevel.Information, Message = "Publisher: chunk {Chunk} not stored, the publish queue is full")]
    public static partial void PublishDropped(ILogger logger, int chunk);
}
