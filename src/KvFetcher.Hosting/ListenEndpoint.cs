using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace KvFetcher.Hosting;

/// <summary>One address to listen on, parsed from a URL.</summary>
public sealed record ListenEndpoint(string Url, bool Https, IPAddress? Address, int Port)
{
    /// <summary>Null <see cref="Address"/> = every interface.</summary>
    public bool IsLoopback => Address is not null && IPAddress.IsLoopback(Address);

    /// <summary>Parses <c>http(s)://IP:PORT</c>, <c>localhost</c> or <c>*</c> (all interfaces); throws <see cref="ArgumentException"/>.</summary>
    public static ListenEndpoint Parse(string url)
    {
        if (string.IsNullOrWhiteSpace(url))
        {
            throw new ArgumentException("An empty URL was given.");
        }

        // "*" and "+" (every interface) are not valid URI hosts; parse them as an IP placeholder.
        string text = url.Replace("://*", "://0.0.0.0", StringComparison.Ordinal).Replace("://+", "://0.0.0.0", StringComparison.Ordinal);
        bool wildcard = text != url;
        if (!Uri.TryCreate(text, UriKind.Absolute, out Uri? uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            throw new ArgumentException($"'{url}' is not an http:// or https:// URL.");
        }

        if (uri.AbsolutePath != "/" || uri.Query.Length > 0 || uri.UserInfo.Length > 0)
        {
            throw new ArgumentException($"The URL '{url}' may hold only a scheme, a host and a port.");
        }

        IPAddress? address;
        if (wildcard)
        {
            address = null;
        }
        else if (uri.IsLoopback && uri.HostNameType == UriHostNameType.Dns)
        {
            address = IPAddress.Loopback; // localhost: IPv4 loopback, which also allows an ephemeral port
        }
        else if (IPAddress.TryParse(uri.Host.Trim('[', ']'), out IPAddress? ip))
        {
            address = ip;
        }
        else
        {
            throw new ArgumentException($"The host of '{url}' must be an IP address, localhost or *.");
        }

        return new ListenEndpoint(url, uri.Scheme == Uri.UriSchemeHttps, address, uri.Port);
    }

    /// <summary>Parses every URL (see <see cref="Parse"/>); throws <see cref="ArgumentException"/> when there is none or one is invalid.</summary>
    public static ListenEndpoint[] ParseAll(IReadOnlyList<string>? urls)
    {
        if (urls is null || urls.Count == 0)
        {
            throw new ArgumentException("At least one URL to listen on is required.");
        }

        return [.. urls.Select(Parse)];
    }

    /// <summary>
    /// Checks that https endpoints come with a readable PEM certificate and key, and that a certificate is not given
    /// without them; throws <see cref="ArgumentException"/> naming the problem.
    /// </summary>
    public static void CheckCertificate(IReadOnlyList<ListenEndpoint> endpoints, string? certificateFile, string? keyFile)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        if (endpoints.Any(e => e.Https))
        {
            if (string.IsNullOrWhiteSpace(certificateFile) || string.IsNullOrWhiteSpace(keyFile))
            {
                throw new ArgumentException("An https URL needs a PEM certificate and its key file.");
            }

            foreach (string file in (string[])[certificateFile, keyFile])
            {
                if (!File.Exists(file))
                {
                    throw new ArgumentException($"The certificate file '{file}' does not exist.");
                }
            }
        }
        else if (certificateFile is not null || keyFile is not null)
        {
            throw new ArgumentException("A certificate was given but no URL is https.");
        }
    }

    /// <summary>
    /// Binds every endpoint on <paramref name="kestrel"/>: https ones with <paramref name="certificate"/> and HTTP/1.1 and
    /// HTTP/2 (negotiated by ALPN), cleartext ones with <paramref name="cleartext"/> (one protocol: HTTP/2 without TLS
    /// needs prior knowledge).
    /// </summary>
    public static void Bind(KestrelServerOptions kestrel, IReadOnlyList<ListenEndpoint> endpoints, X509Certificate2? certificate, HttpProtocols cleartext)
    {
        ArgumentNullException.ThrowIfNull(kestrel);
        ArgumentNullException.ThrowIfNull(endpoints);
        foreach (ListenEndpoint endpoint in endpoints)
        {
            void Configure(ListenOptions listen)
            {
                if (endpoint.Https)
                {
                    listen.Protocols = HttpProtocols.Http1AndHttp2;
                    listen.UseHttps(certificate ?? throw new ArgumentException($"{endpoint.Url} is https but no certificate was loaded."));
                }
                else
                {
                    listen.Protocols = cleartext;
                }
            }

            if (endpoint.Address is null)
            {
                kestrel.ListenAnyIP(endpoint.Port, Configure);
            }
            else
            {
                kestrel.Listen(endpoint.Address, endpoint.Port, Configure);
            }
        }
    }

    /// <summary>The PEM certificate and key when any endpoint is https, else null; throws <see cref="ArgumentException"/> if they do not load.</summary>
    public static X509Certificate2? LoadCertificate(IReadOnlyList<ListenEndpoint> endpoints, string? certificateFile, string? keyFile)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        if (!endpoints.Any(e => e.Https))
        {
            return null;
        }

        try
        {
            return X509Certificate2.CreateFromPemFile(certificateFile!, keyFile);
        }
        catch (CryptographicException ex)
        {
            throw new ArgumentException($"Cannot load the certificate '{certificateFile}' with key '{keyFile}': {ex.Message}", ex);
        }
    }
}
