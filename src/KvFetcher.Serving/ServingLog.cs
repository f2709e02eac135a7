using KvFetcher.Serving.Scheduling;
using Microsoft.Extensions.Logging;

namespace KvFetcher.Serving;

/// <summary>The serving engine's log events (ids 1200-1299; see <c>KvFetcher.Hosting.HostingLog</c> for the ranges).</summary>
internal static partial class ServingLog
{
    [LoggerMessage(EventId = 1201, EventName = "RequestCompleted", Level = LogLevel.Information,
        Message = "Request done: tenant {Tenant}, prompt {PromptTokens} tokens ({ReusedTokens} reused, {ComputedTokens} computed), restored {Variants}, fallbacks {Fallbacks}; "
            + "TTFT {TtftMs} ms (queue {QueueMs}, fetch {FetchMs}, prefill {PrefillMs}); {CompletionTokens} tokens generated, {FinishReason}, {ElapsedMs} ms in all")]
    public static partial void RequestCompleted(ILogger logger, string tenant, int promptTokens, int reusedTokens, int computedTokens, string variants, string fallbacks,
        double ttftMs, double queueMs, double fetchMs, double prefillMs, int completionTokens, FinishReason finishReason, double elapsedMs);

    [LoggerMessage(EventId = 1202, EventName = "RequestFailed", Level = LogLevel.Error, Message = "Request failed in the engine: tenant {Tenant}, prompt {PromptTokens} tokens")]
    public static partial void RequestFailed(ILogger logger, string tenant, int promptTokens, Exception exception);

    [LoggerMessage(EventId = 1203, EventName = "PrefixFetchFailed", Level = LogLevel.Error, Message = "The stored prefix could not be fetched; computing the whole prompt")]
    public static partial void PrefixFetchFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 1206, EventName = "FetcherStopFailed", Level = LogLevel.Warning, Message = "A request's fetcher failed to stop cleanly; its session is released anyway")]
    public static partial void FetcherStopFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 1204, EventName = "EngineStarted", Level = LogLevel.Information, Message = "Serving {Model} on {Engine}; store {Store}")]
    public static partial void EngineStarted(ILogger logger, string model, string engine, string store);

    [LoggerMessage(EventId = 1205, EventName = "LadderWarning", Level = LogLevel.Warning, Message = "{Warning}")]
    public static partial void LadderWarning(ILogger logger, string warning);
}
