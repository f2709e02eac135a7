using KvFetcher.Hosting;

namespace KvFetcher.Serving;

/// <summary>How an <see cref="LlmServer"/> binds, authenticates and picks tenants. <see cref="Validate"/> runs before anything binds.</summary>
public sealed record LlmServerOptions
{
    /// <summary>The engine's options (model, store, limits).</summary>
    public required KvFetcherOptions Engine { get; init; }

    /// <summary>Where to listen: <c>http(s)://IP:PORT</c>, <c>localhost</c> or <c>*</c> (all interfaces); port 0 = ephemeral.</summary>
    public IReadOnlyList<string> Urls { get; init; } = ["http://127.0.0.1:8080"];

    /// <summary>PEM certificate for <c>https</c> URLs.</summary>
    public string? CertificateFile { get; init; }

    /// <summary>PEM private key of <see cref="CertificateFile"/>.</summary>
    public string? CertificateKeyFile { get; init; }

    /// <summary>
    /// API keys every request must present as <c>Authorization: Bearer KEY</c> (401 otherwise), whatever the route,
    /// except <c>/healthz</c> and, with <see cref="PublicMetrics"/>, <c>/metrics</c>; null = no check (unless
    /// <see cref="TenantFromKey"/>).
    /// </summary>
    public IReadOnlyList<string>? ApiKeys { get; init; }

    /// <summary>Serve <c>/metrics</c> without an API key, e.g. to a scraper that has none.</summary>
    public bool PublicMetrics { get; init; }

    /// <summary>
    /// Each API key is its own tenant (the salt is a hash of the key; <c>X-KvFetcher-Tenant</c> narrows it further): a
    /// context is reused only for requests carrying the same key. Requests without a key get 401 (on every route but the
    /// public list, as with <see cref="ApiKeys"/>). Without this, the
    /// tenant is the <c>X-KvFetcher-Tenant</c> header, else <see cref="KvFetcherOptions.DefaultTenant"/>.
    /// </summary>
    public bool TenantFromKey { get; init; }

    /// <summary>Serve without API keys on a non-loopback URL (refused otherwise).</summary>
    public bool AllowAnonymous { get; init; }

    /// <summary>The largest request body (413 beyond).</summary>
    public long MaxRequestBodyBytes { get; init; } = 8L << 20;

    /// <summary>Throws <see cref="ArgumentException"/> with one line naming the first problem.</summary>
    public void Validate() => _ = ParseEndpoints();

    internal IReadOnlyList<ListenEndpoint> ParseEndpoints()
    {
        ArgumentNullException.ThrowIfNull(Engine);
        Engine.Validate();
        ListenEndpoint[] endpoints = ListenEndpoint.ParseAll(Urls);
        ListenEndpoint.CheckCertificate(endpoints, CertificateFile, CertificateKeyFile);

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

        bool everyLoopback = endpoints.All(e => e.IsLoopback);
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
}
