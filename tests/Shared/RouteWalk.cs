using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Routing.Patterns;
using Microsoft.Extensions.DependencyInjection;

namespace KvFetcher.Tests;

/// <summary>
/// Walks every route a running server mapped (read from its <see cref="EndpointDataSource"/>, so a route added later is
/// walked too) with every method and with spellings of the path that routing may treat as the same route (case,
/// percent-encoding, slashes, dot segments), sent as raw HTTP/1.1 so that no client normalises them first.
/// </summary>
internal static class RouteWalk
{
    public static readonly string[] Methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "OPTIONS", "DELETE"];

    /// <summary>The server's mapped routes.</summary>
    public static IReadOnlyList<RouteEndpoint> Routes(IServiceProvider services) =>
        [.. services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>()];

    /// <summary>The route's canonical path with each parameter filled in by <paramref name="parameter"/>.</summary>
    public static string PathOf(RoutePattern pattern, Func<string, string> parameter) => Spell(pattern, parameter, literal => literal, "/");

    /// <summary>Spellings of <paramref name="pattern"/>'s path: the canonical one first, then variants of it.</summary>
    public static IEnumerable<(string Name, string Target)> Variants(RoutePattern pattern, Func<string, string> parameter)
    {
        string canonical = PathOf(pattern, parameter);
        yield return ("canonical", canonical);
        yield return ("upper case", Spell(pattern, parameter, s => s.ToUpperInvariant(), "/"));
        yield return ("mixed case", Spell(pattern, parameter, MixedCase, "/"));
        yield return ("letters percent-encoded", Spell(pattern, parameter, PercentEncodeLetters, "/"));
        yield return ("upper case, percent-encoded", Spell(pattern, parameter, s => PercentEncodeLetters(s.ToUpperInvariant()), "/"));
        yield return ("trailing slash", canonical + "/");
        yield return ("upper case, trailing slash", Spell(pattern, parameter, s => s.ToUpperInvariant(), "/") + "/");
        yield return ("separators %2F", "/" + Spell(pattern, parameter, s => s, "%2F")[1..]);
        yield return ("separators %2f", "/" + Spell(pattern, parameter, s => s, "%2f")[1..]);
        yield return ("leading //", "/" + canonical);
        yield return ("every separator //", Spell(pattern, parameter, s => s, "//"));
        yield return ("dot segment", "/x/.." + canonical);
        yield return ("encoded dot segment", "/x/%2e%2e" + canonical);
        yield return ("query", canonical + "?a=1");
    }

    /// <summary>
    /// Sends every method to every spelling of every route not in <paramref name="publicPaths"/> (each path once: GET,
    /// PUT, ... of one path are several routes), once per presented token (null: none); returns the requests sent and
    /// a line for each one that got a 2xx.
    /// </summary>
    public static async Task<(int Sent, List<string> Leaks)> WalkAsync(Uri server, IReadOnlyList<RouteEndpoint> routes, IReadOnlyCollection<string> publicPaths,
        Func<string, string> parameter, IReadOnlyList<string?> tokens, Func<string, byte[]?> bodyFor, CancellationToken cancellationToken)
    {
        var leaks = new List<string>();
        int sent = 0;
        foreach (RouteEndpoint route in routes.DistinctBy(r => r.RoutePattern.RawText))
        {
            if (publicPaths.Contains(route.RoutePattern.RawText))
            {
                continue;
            }

            foreach ((string variant, string target) in Variants(route.RoutePattern, parameter))
            {
                foreach (string method in Methods)
                {
                    foreach (string? token in tokens)
                    {
                        int status = await SendAsync(server, method, target, token, bodyFor(method), cancellationToken);
                        sent++;
                        if (status is >= 200 and < 300)
                        {
                            leaks.Add($"{method} {target} ({variant}, {(token is null ? "no token" : "wrong token")}) -> {status}");
                        }
                    }
                }
            }
        }

        return (sent, leaks);
    }

    /// <summary>Sends one request as raw HTTP/1.1 and returns the status code (with a 10 s bound on the whole exchange).</summary>
    public static async Task<int> SendAsync(Uri server, string method, string target, string? token, byte[]? body = null, CancellationToken cancellationToken = default)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(TimeSpan.FromSeconds(10));
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(server.Host, server.Port, deadline.Token);
        NetworkStream stream = tcp.GetStream();
        var head = new StringBuilder();
        head.Append(CultureInfo.InvariantCulture, $"{method} {target} HTTP/1.1\r\nHost: {server.Authority}\r\nConnection: close\r\n");
        if (token is not null)
        {
            head.Append(CultureInfo.InvariantCulture, $"Authorization: Bearer {token}\r\n");
        }

        body ??= [];
        head.Append(CultureInfo.InvariantCulture, $"Content-Type: application/octet-stream\r\nContent-Length: {body.Length}\r\n\r\n");
        await stream.WriteAsync(Encoding.ASCII.GetBytes(head.ToString()), deadline.Token);
        try
        {
            await stream.WriteAsync(body, deadline.Token);
        }
        catch (IOException)
        {
            // The server may answer (and close) before it reads the body; the status line is still there to read.
        }

        byte[] buffer = new byte[512];
        int read = 0;
        while (read < buffer.Length)
        {
            int n = await stream.ReadAsync(buffer.AsMemory(read), deadline.Token);
            if (n == 0)
            {
                break;
            }

            read += n;
            if (Array.IndexOf(buffer, (byte)'\n', 0, read) >= 0)
            {
                break;
            }
        }

        string line = Encoding.ASCII.GetString(buffer, 0, read);
        string[] parts = line.Split(' ', 3);
        return parts.Length >= 2 && parts[0].StartsWith("HTTP/", StringComparison.Ordinal) && int.TryParse(parts[1], CultureInfo.InvariantCulture, out int status)
            ? status
            : throw new InvalidOperationException($"{method} {target}: no HTTP status line in '{line}'.");
    }

    /// <summary>Whether an endpoint is one that anonymous callers are let in to (the public list).</summary>
    public static bool IsAnonymous(Endpoint endpoint) => endpoint.Metadata.GetMetadata<Microsoft.AspNetCore.Authorization.IAllowAnonymous>() is not null;

    /// <summary>The HTTP methods a route answers, or null for all.</summary>
    public static IReadOnlyList<string>? MethodsOf(Endpoint endpoint) => endpoint.Metadata.GetMetadata<IHttpMethodMetadata>()?.HttpMethods;

    private static string Spell(RoutePattern pattern, Func<string, string> parameter, Func<string, string> literal, string separator)
    {
        var path = new StringBuilder();
        foreach (RoutePatternPathSegment segment in pattern.PathSegments)
        {
            path.Append(path.Length == 0 ? "/" : separator);
            foreach (RoutePatternPart part in segment.Parts)
            {
                path.Append(part switch
                {
                    RoutePatternLiteralPart text => literal(text.Content),
                    RoutePatternParameterPart value => parameter(value.Name),
                    RoutePatternSeparatorPart between => between.Content,
                    _ => throw new InvalidOperationException($"Unknown route part {part}."),
                });
            }
        }

        return path.Length == 0 ? "/" : path.ToString();
    }

    private static string MixedCase(string text) =>
        string.Create(text.Length, text, (span, source) =>
        {
            for (int i = 0; i < source.Length; i++)
            {
                span[i] = i % 2 == 0 ? char.ToUpperInvariant(source[i]) : source[i];
            }
        });

    private static string PercentEncodeLetters(string text)
    {
        var encoded = new StringBuilder(text.Length * 3);
        foreach (char c in text)
        {
            if (char.IsAsciiLetter(c))
            {
                encoded.Append(CultureInfo.InvariantCulture, $"%{(int)c:X2}");
            }
            else
            {
                encoded.Append(c);
            }
        }

        return encoded.ToString();
    }
}
