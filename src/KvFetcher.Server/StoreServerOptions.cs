using KvFetcher.Core.Containers;
using KvFetcher.Hosting;
using KvFetcher.Store.Remote;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace KvFetcher.Server;

/// <summary>How a <see cref="StoreServer"/> stores, binds and guards. <see cref="Validate"/> runs before anything binds.</summary>
public sealed record StoreServerOptions
{
    /// <summary>The shortest bearer token accepted: a short shared secret is guessable over the network.</summary>
    public const int MinTokenLength = 16;

    /// <summary>Where the objects live (a <c>DiskKvStore</c> directory; created when missing).</summary>
    public required string DataDirectory { get; init; }

    /// <summary>
    /// The bearer token every request must carry (already read from a file or the environment), whatever the route,
    /// except <c>/healthz</c> and, with <see cref="PublicMetrics"/>, <c>/metrics</c>.
    /// </summary>
    public string? Token { get; init; }

    /// <summary>Serve every route without a token. Refused unless every URL is a loopback address.</summary>
    public bool AllowAnonymous { get; init; }

    /// <summary>Serve <c>/metrics</c> (object counts, bytes, request rates) without the token, e.g. to a scraper that has none.</summary>
    public bool PublicMetrics { get; init; }

    /// <summary>Where to listen: <c>http(s)://IP:port</c>, <c>localhost</c> or <c>*</c> (all interfaces); port 0 = ephemeral.</summary>
    public IReadOnlyList<string> Urls { get; init; } = ["http://127.0.0.1:7070"];

    /// <summary>PEM certificate for <c>https</c> URLs.</summary>
    public string? CertificateFile { get; init; }

    /// <summary>PEM private key of <see cref="CertificateFile"/>.</summary>
    public string? CertificateKeyFile { get; init; }

    /// <summary>The most bytes the store keeps (it evicts beyond); null = unbounded.</summary>
    public long? CapacityBytes { get; init; }

    /// <summary>The largest object a PUT may carry (413 beyond).</summary>
    public long MaxObjectBytes { get; init; } = StoreProtocol.DefaultMaxObjectBytes;

    /// <summary>The longest a request may take, body included (then it is answered 503 or aborted).</summary>
    public TimeSpan RequestTimeout { get; init; } = StoreProtocol.DefaultServerRequestTimeout;

    /// <summary>
    /// The protocol of cleartext (http://) endpoints: HTTP/1.1 (measured faster for large objects), or HTTP/2 with prior
    /// knowledge (h2c) to compare. TLS endpoints always negotiate HTTP/1.1 or HTTP/2.
    /// </summary>
    internal HttpProtocols CleartextProtocols { get; init; } = HttpProtocols.Http1;

    /// <summary>Throws <see cref="ArgumentException"/> with one line naming the first problem.</summary>
    public void Validate() => _ = ParseEndpoints();

    /// <summary>Validates and returns where to listen.</summary>
    internal IReadOnlyList<ListenEndpoint> ParseEndpoints()
    {
        if (string.IsNullOrWhiteSpace(DataDirectory))
        {
            throw new ArgumentException("The data directory is required.");
        }

        ListenEndpoint[] endpoints = ListenEndpoint.ParseAll(Urls);

        if (Token is not null)
        {
            if (AllowAnonymous)
            {
                throw new ArgumentException("Both a token and anonymous access were given; choose one.");
            }

            if (Token.Length < MinTokenLength)
            {
                throw new ArgumentException($"The token has {Token.Length} characters; at least {MinTokenLength} are required.");
            }

            if (Token.Any(c => c is < '!' or > '~'))
            {
                throw new ArgumentException("The token may hold only printable ASCII characters without spaces.");
            }
        }
        else if (!AllowAnonymous)
        {
            throw new ArgumentException("A bearer token is required (or allow anonymous access, on loopback URLs only).");
        }
        else if (endpoints.FirstOrDefault(e => !e.IsLoopback) is { } open)
        {
            throw new ArgumentException($"Anonymous access is refused on a non-loopback URL ({open.Url}); give a token.");
        }

        ListenEndpoint.CheckCertificate(endpoints, CertificateFile, CertificateKeyFile);

        if (CapacityBytes is <= 0)
        {
            throw new ArgumentException($"The capacity must be positive; got {CapacityBytes} bytes.");
        }

        long smallest = ChunkContainer.GetSize(0, 0);
        if (MaxObjectBytes < smallest || MaxObjectBytes > Array.MaxLength)
        {
            throw new ArgumentException($"The largest object size must be between {smallest} and {Array.MaxLength} bytes; got {MaxObjectBytes}.");
        }

        if (RequestTimeout <= TimeSpan.Zero || RequestTimeout > TimeSpan.FromDays(1))
        {
            throw new ArgumentException($"The request timeout must be positive and at most a day; got {RequestTimeout}.");
        }

        return endpoints;
    }
}
