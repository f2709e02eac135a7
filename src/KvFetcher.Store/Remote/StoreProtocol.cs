using System.Globalization;
using System.Net;
using System.Net.Http.Headers;

namespace KvFetcher.Store.Remote;

/// <summary>
/// The HTTP protocol between <see cref="HttpKvStore"/> and the store server (<c>kvfetch serve</c>), defined once for
/// both sides: routes, media types, limits, the one byte-range form served, and what each status code means.
/// <code>
/// GET    /v1/objects/{key}  200 the object | 206 one range (Range: bytes=first-last or bytes=first-) | 404 | 416
/// HEAD   /v1/objects/{key}  200, Content-Length = the object's length (verified) | 404
/// PUT    /v1/objects/{key}  204 | 400 not an intact container | 411 no Content-Length | 413 over the limit | 507 full
/// DELETE /v1/objects/{key}  204 | 404
/// POST   /v1/lookup         200 LookupResponse for a LookupRequest of at most MaxLookupKeys keys | 400
/// GET    /v1/stats          200 StoreStats (JSON)
/// GET    /healthz           200 "ok" (no token)       GET /metrics  Prometheus text
/// </code>
/// Every route but <c>/healthz</c> (and a public <c>/metrics</c>) needs the bearer token (401 without). A refusal is
/// answered with one line of text; a failing store with 503 (the client retries reads), a full one with 507.
/// </summary>
public static class StoreProtocol
{
    /// <summary>The path under which every object lives, one segment per key.</summary>
    public const string ObjectsPath = "/v1/objects/";

    /// <summary>The route of one object; its key is the route value <see cref="KeyRouteValue"/>.</summary>
    public const string ObjectRoute = ObjectsPath + "{key}";

    /// <summary>The name of the object key in <see cref="ObjectRoute"/>.</summary>
    public const string KeyRouteValue = "key";

    public const string LookupRoute = "/v1/lookup";

    public const string StatsRoute = "/v1/stats";

    /// <summary>The media type of an object's body (a chunk container, or a range of one).</summary>
    public const string ObjectMediaType = "application/octet-stream";

    /// <summary>The media type of lookup and stats bodies (<see cref="StoreProtocolJson"/>).</summary>
    public const string JsonMediaType = "application/json";

    /// <summary>The media type of a refusal: one line of UTF-8 text.</summary>
    public const string ErrorMediaType = "text/plain; charset=utf-8";

    /// <summary>The only range unit served.</summary>
    public const string RangeUnit = "bytes";

    /// <summary>The most keys one lookup may ask about; a client splits longer lists.</summary>
    public const int MaxLookupKeys = 4096;

    /// <summary>The largest lookup body a server reads: every key at its longest, JSON-quoted, with room to spare.</summary>
    public const long MaxLookupBodyBytes = (MaxLookupKeys * (ObjectKey.MaxLength + 8)) + 1024;

    /// <summary>The longest refusal text a client quotes in its exception.</summary>
    public const int MaxErrorTextBytes = 1024;

    /// <summary>The largest object a server accepts unless configured otherwise (413 beyond).</summary>
    public const long DefaultMaxObjectBytes = 256L << 20;

    /// <summary>A client's deadline for one attempt unless configured otherwise.</summary>
    public static TimeSpan DefaultClientRequestTimeout { get; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// A server's deadline for one request, body included, unless configured otherwise; longer than a client's, so a
    /// client gives up (and may retry) before the server answers 503.
    /// </summary>
    public static TimeSpan DefaultServerRequestTimeout { get; } = TimeSpan.FromSeconds(30);

    /// <summary>The path of <paramref name="key"/>'s object relative to the server's base address.</summary>
    public static string ObjectPath(ObjectKey key) => ObjectsPath[1..] + key.Value;

    /// <summary>The path of the lookup route relative to the server's base address.</summary>
    public static string LookupPath => LookupRoute[1..];

    /// <summary>The path of the stats route relative to the server's base address.</summary>
    public static string StatsPath => StatsRoute[1..];

    /// <summary>The <c>Range</c> header asking for <paramref name="range"/> (not <see cref="ByteRange.All"/>, not empty).</summary>
    public static RangeHeaderValue RangeHeader(ByteRange range) =>
        new(range.Offset, range.Length is long length ? range.Offset + length - 1 : null);

    /// <summary>Parses one <c>bytes=first-last</c> or <c>bytes=first-</c> range (suffix and multiple ranges are not served).</summary>
    public static bool TryParseRange(string? header, out ByteRange range)
    {
        range = default;
        if (!RangeHeaderValue.TryParse(header, out RangeHeaderValue? parsed)
            || !string.Equals(parsed.Unit, RangeUnit, StringComparison.OrdinalIgnoreCase)
            || parsed.Ranges.Count != 1)
        {
            return false;
        }

        RangeItemHeaderValue item = parsed.Ranges.First();
        if (item.From is not long from)
        {
            return false;
        }

        if (item.To is long to)
        {
            if (to < from)
            {
                return false;
            }

            range = new ByteRange(from, to - from + 1);
        }
        else
        {
            range = new ByteRange(from, null);
        }

        return true;
    }

    /// <summary>The <c>Content-Range</c> of <paramref name="count"/> bytes from <paramref name="offset"/> of an object of <paramref name="objectLength"/>.</summary>
    public static string ContentRange(long offset, long count, long objectLength) =>
        string.Create(CultureInfo.InvariantCulture, $"{RangeUnit} {offset}-{offset + count - 1}/{objectLength}");

    /// <summary>The <c>Content-Range</c> of a 416 answer: no byte of the range is in an object of <paramref name="objectLength"/>.</summary>
    public static string UnsatisfiedContentRange(long objectLength) =>
        string.Create(CultureInfo.InvariantCulture, $"{RangeUnit} */{objectLength}");

    /// <summary>The status a server answers when its store fails: 507 when it is full, 503 (worth a retry) otherwise.</summary>
    public static int StatusOf(KvStoreException failure) =>
        failure is KvStoreFullException ? (int)HttpStatusCode.InsufficientStorage : (int)HttpStatusCode.ServiceUnavailable;

    /// <summary>Whether a client reads <paramref name="status"/> as "the store cannot take this object" (<see cref="KvStoreFullException"/>).</summary>
    public static bool MeansFull(HttpStatusCode status) => status is HttpStatusCode.InsufficientStorage or HttpStatusCode.RequestEntityTooLarge;

    /// <summary>Whether <paramref name="status"/> refuses the client's token.</summary>
    public static bool MeansBadToken(HttpStatusCode status) => status is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden;

    /// <summary>Whether a read answered with <paramref name="status"/> is worth another attempt (any 5xx but 507).</summary>
    public static bool MeansRetry(HttpStatusCode status) => (int)status >= 500 && !MeansFull(status);
}
