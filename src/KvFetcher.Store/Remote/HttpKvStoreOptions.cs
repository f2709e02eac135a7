namespace KvFetcher.Store.Remote;

/// <summary>Where an <see cref="HttpKvStore"/> connects and how patient it is.</summary>
public sealed record HttpKvStoreOptions
{
    /// <summary>The server, e.g. <c>http://10.0.0.5:7070/</c> (a path prefix is kept: <c>https://proxy/kv/</c>).</summary>
    public required Uri BaseAddress { get; init; }

    /// <summary>The bearer token; null sends none (a server on loopback may allow that).</summary>
    public string? Token { get; init; }

    /// <summary>The deadline of one attempt, from sending the request to the last byte of the answer.</summary>
    public TimeSpan RequestTimeout { get; init; } = StoreProtocol.DefaultClientRequestTimeout;

    /// <summary>
    /// A read (get, head) that receives no byte for this long, waiting for the answer's headers or between pieces of its
    /// body, is a stall: it fails at once with <see cref="KvStoreException"/> and is not retried (a store that stalled
    /// once is likely to again; the caller computes instead). Two seconds by default: a healthy server verifies a large
    /// object before its headers go out, and a loaded one (or one just restarted) can take longer than half a second to
    /// start answering; the fetcher does not wait for this clock anyway, it takes a late chunk back by prediction.
    /// </summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Extra attempts for reads (get, lookup, stats) that failed on the network, by timeout or with a 5xx.</summary>
    public int MaxRetries { get; init; } = 2;

    /// <summary>
    /// The HTTP version; null picks HTTP/2 over https (negotiated, HTTP/1.1 when the server lacks it) and HTTP/1.1 over
    /// http (measured faster than h2c for large objects on loopback). 2.0 over http means h2c with prior knowledge.
    /// </summary>
    public Version? HttpVersion { get; init; }

    /// <summary>A PEM certificate (the server's own, or its CA) trusted besides the system's roots, for self-signed servers.</summary>
    public string? TrustedCertificateFile { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad field.</summary>
    public void Validate()
    {
        if (BaseAddress is null || !BaseAddress.IsAbsoluteUri || (BaseAddress.Scheme != Uri.UriSchemeHttp && BaseAddress.Scheme != Uri.UriSchemeHttps))
        {
            throw new ArgumentException($"The store address must be an absolute http:// or https:// URL; got '{BaseAddress}'.", nameof(BaseAddress));
        }

        if (RequestTimeout <= TimeSpan.Zero || RequestTimeout > TimeSpan.FromDays(1))
        {
            throw new ArgumentException($"The request timeout must be positive and at most a day; got {RequestTimeout}.", nameof(RequestTimeout));
        }

        if (IdleTimeout <= TimeSpan.Zero || IdleTimeout > TimeSpan.FromDays(1))
        {
            throw new ArgumentException($"The idle timeout must be positive and at most a day; got {IdleTimeout}.", nameof(IdleTimeout));
        }

        if (MaxRetries is < 0 or > 10)
        {
            throw new ArgumentException($"The retry count must be between 0 and 10; got {MaxRetries}.", nameof(MaxRetries));
        }

        if (HttpVersion is not null && HttpVersion != System.Net.HttpVersion.Version11 && HttpVersion != System.Net.HttpVersion.Version20)
        {
            throw new ArgumentException($"The HTTP version must be 1.1 or 2.0; got {HttpVersion}.", nameof(HttpVersion));
        }

        if (Token is not null && (Token.Length == 0 || Token.Any(c => c is < '!' or > '~')))
        {
            throw new ArgumentException("The token must be non-empty printable ASCII without spaces.", nameof(Token));
        }

        if (TrustedCertificateFile is not null && !File.Exists(TrustedCertificateFile))
        {
            throw new ArgumentException($"The trusted certificate file '{TrustedCertificateFile}' does not exist.", nameof(TrustedCertificateFile));
        }
    }
}
