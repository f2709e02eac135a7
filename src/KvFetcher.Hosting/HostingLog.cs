using Microsoft.Extensions.Logging;

namespace KvFetcher.Hosting;

/// <summary>
/// The log events of the hosting both servers share. Event ids by project: Hosting 1000-1099, Server 1100-1199,
/// Serving 1200-1299, Fetch 1300-1399 (publisher 1350-1399), Store 1400-1499.
/// </summary>
internal static partial class HostingLog
{
    [LoggerMessage(EventId = 1001, EventName = "Unauthorized", Level = LogLevel.Information,
        Message = "Refused {Method} {Path} from {RemoteAddress} with 401: {Reason}")]
    public static partial void Unauthorized(ILogger logger, string method, string path, string remoteAddress, string reason);
}
