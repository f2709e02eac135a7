using Microsoft.Extensions.Logging;

namespace KvFetcher.Server;

/// <summary>The store server's log events (ids 1100-1199; see <c>KvFetcher.Hosting.HostingLog</c> for the ranges).</summary>
internal static partial class ServerLog
{
    [LoggerMessage(EventId = 1101, EventName = "StoreFailed", Level = LogLevel.Warning, Message = "{Method} {Path} failed in the store, answered {Status}")]
    public static partial void StoreFailed(ILogger logger, string method, string path, int status, Exception exception);

    [LoggerMessage(EventId = 1102, EventName = "RequestTimedOut", Level = LogLevel.Warning, Message = "{Method} {Path} took longer than {TimeoutSeconds} s, answered 503")]
    public static partial void RequestTimedOut(ILogger logger, string method, string path, double timeoutSeconds);
}
