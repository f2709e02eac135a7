using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace KvFetcher.Hosting;

/// <summary>How <see cref="KestrelApp.CreateBuilder(KestrelAppOptions)"/> binds, limits and authenticates a server.</summary>
public sealed record KestrelAppOptions
{
    /// <summary>The application's name (the host's, in logs).</summary>
    public required string ApplicationName { get; init; }

    /// <summary>Where to listen (see <see cref="ListenEndpoint.ParseAll"/>).</summary>
    public required IReadOnlyList<ListenEndpoint> Endpoints { get; init; }

    /// <summary>PEM certificate for the https endpoints (checked by <see cref="ListenEndpoint.CheckCertificate"/>).</summary>
    public string? CertificateFile { get; init; }

    /// <summary>PEM private key of <see cref="CertificateFile"/>.</summary>
    public string? CertificateKeyFile { get; init; }

    /// <summary>The protocol of cleartext (http://) endpoints; https ones negotiate HTTP/1.1 or HTTP/2.</summary>
    public HttpProtocols CleartextProtocols { get; init; } = HttpProtocols.Http1;

    /// <summary>The largest request body Kestrel reads (413 beyond).</summary>
    public required long MaxRequestBodyBytes { get; init; }

    /// <summary>The bearer tokens every route but the public list requires.</summary>
    public required BearerTokens Tokens { get; init; }

    /// <summary>Writes a refusal's body in the server's own error format (status 401 and <c>WWW-Authenticate</c> are set first).</summary>
    public required Func<HttpContext, Task> WriteUnauthorizedAsync { get; init; }
}
