using Microsoft.Extensions.Logging;

namespace KvFetcher.Store.Telemetry;

/// <summary>The stores' log events (ids 1400-1499; see <c>KvFetcher.Hosting.HostingLog</c> for the ranges).</summary>
internal static partial class StoreLog
{
    [LoggerMessage(EventId = 1401, EventName = "StoreOperationFailed", Level = LogLevel.Warning, Message = "Store {Operation} failed on {Store}: {Reason}")]
    public static partial void OperationFailed(ILogger logger, string operation, string store, string reason, Exception? exception);

    [LoggerMessage(EventId = 1402, EventName = "StoreUnavailable", Level = LogLevel.Debug, Message = "Store {Operation} refused at once on {Store} (circuit open): {Reason}")]
    public static partial void Unavailable(ILogger logger, string operation, string store, string reason);

    [LoggerMessage(EventId = 1403, EventName = "StoreRetry", Level = LogLevel.Information, Message = "Store {Operation} attempt {Attempt} of {Attempts} failed on {Store}, retrying in {BackoffMs} ms: {Reason}")]
    public static partial void Retry(ILogger logger, string operation, int attempt, int attempts, string store, double backoffMs, string reason);

    [LoggerMessage(EventId = 1404, EventName = "CircuitOpened", Level = LogLevel.Warning, Message = "Store {Store}: {Operation} circuit opened after failures (last: {Reason}); calls are refused until a probe succeeds")]
    public static partial void CircuitOpened(ILogger logger, string store, string operation, string reason);

    [LoggerMessage(EventId = 1405, EventName = "CircuitClosed", Level = LogLevel.Information, Message = "Store {Store}: {Operation} circuit closed, the store answers again")]
    public static partial void CircuitClosed(ILogger logger, string store, string operation);
}
