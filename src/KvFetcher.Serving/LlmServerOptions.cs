using System.Net;

namespace KvFetcher.Serving;

/// <summary>How an <see cref="LlmServer"/> binds, authenticates and picks tenants. <see cref="Validate"/> runs before anything binds.</summary>
public sealed record LlmServerOptions
{
    /// <summary>The engine's options (model, store, limits).</summary>
    public required KvFetcherOptions Engine { get; init; }

    /// <summary>Where to listen: <c>http://IP:PORT</c>, <c>http://localhost:PORT</c> or <c>http://*:PORT</c>; port 0 = ephemeral.</summary>
    public IReadOnlyList<string> Urls { get; init; } = ["http://127.0.0.1:8080"];

    /// <summary>
    /// API keys a <c>/v1</c> request must present as <c>Authorization: Bearer KEY</c> (401 otherwise); null = no check.
    /// </summary>
    public IReadOnlyList<string>? ApiKeys { get; init; }

    /// <summary>
    /// Each API key is its own tenant (the salt is a hash of the key; <c>X-KvFetcher-Tenant</c> narrows it further): a
    /// context is reused only for requests carrying the same key. Requests without a key get 401. Without this, the
    /// tenant is the <c>X-KvFetcher-Tenant</c> header, else <see cref="KvFetcherOptions.DefaultTenant"/>.
    /// </summary>
    public bool TenantFromKey { get; init; }

    /// <summary>Serve without API keys on a non-loopback URL (refused otherwise).</summary>
    public bool AllowAnonymous { get; init; }

    /// <summary>The largest request body (413 beyond).</summary>
    public long MaxRequestBodyBytes { get; init; } = 8L << 20;

    /// <summary>Throws <see cref="ArgumentException"/> with one line naming the first problem.</summary>
    public void Validate() => _ = ParseEndpoints();

    internal IReadOnlyList<(IPAddress? Address, int Port)> ParseEndpoints()
    {
        ArgumentNullException.ThrowIfNull(Engine);
        Engine.Validate();
        if (Urls is null || Urls.Count == 0)
        {
            throw new ArgumentException("At least one URL to listen on is required.");
        }

        var endpoints = new List<(IPAddress?, int)>(Urls.Count);
        foreach (string url in Urls)
        {
            endpoints.Add(ParseUrl(url));
        }

        if (ApiKeys is not null)
        {
            if (ApiKeys.Count == 0)
            {
                throw new ArgumentException("An empty list of API keys was given.");
            }

            foreach (string key in ApiKeys)
            {
                if (string.IsNullOrEmpty(key) || key.Length < 8 || key.Length > 1024 || key.Any(c => c is < '!' or > '~'))
                {
                    throw new ArgumentException("Every API key needs 8 to 1024 printable ASCII characters without spaces.");
                }
            }
        }

        bool everyLoopback = endpoints.All(e => e.Item1 is not null && IPAddress.IsLoopback(e.Item1));
        if (ApiKeys is null && !AllowAnonymous && !everyLoopback)
        {
            throw new ArgumentException("Serving on a non-loopback URL needs API keys (or allow anonymous access explicitly).");
        }

        if (MaxRequestBodyBytes < 1024 || MaxRequestBodyBytes > 1L << 30)
        {
            throw new ArgumentException($"The largest request body must be between 1 KiB and 1 GiB; got {MaxRequestBodyBytes} bytes.");
        }

        return endpoints;
    }

    private static (IPAddress? Address, int Port) ParseUrl(string url)
    {
        if (string.IsNullOrWhiteSpace(url))
        {
            throw new ArgumentException("An empty URL was given.");
        }

        string text = url.Replace("://*", "://0.0.0.0", StringComparison.Ordinal).Replace("://+", "://0.0.0.0", StringComparison.Ordinal);
        bool wildcard = text != url;
        if (!Uri.TryCreate(text, UriKind.Absolute, out Uri? uri) || uri.Scheme != Uri.UriSchemeHttp)
        {
            throw new ArgumentException($"'{url}' is not an http:// URL (terminate TLS in front of the server).");
        }

        if (uri.AbsolutePath != "/" || uri.Query.Length > 0 || uri.UserInfo.Length > 0)
        {
            throw new ArgumentException($"The URL '{url}' may hold only a scheme, a host and a port.");
        }

        if (wildcard)
        {
            return (null, uri.Port);
        }

        if (uri.IsLoopback && uri.HostNameType == UriHostNameType.Dns)
        {
            return (IPAddress.Loopback, uri.Port);
        }

        if (IPAddress.TryParse(uri.Host.Trim('[', ']'), out IPAddress? ip))
        {
            return (ip, uri.Port);
        }

        throw new ArgumentException($"The host of '{url}' must be an IP address, localhost or *.");
    }
}
