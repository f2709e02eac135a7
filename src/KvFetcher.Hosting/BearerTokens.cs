using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Primitives;

namespace KvFetcher.Hosting;

/// <summary>
/// The bearer tokens a server accepts in <c>Authorization: Bearer TOKEN</c>. A presented token is compared with every
/// accepted one as SHA-256 hashes in constant time, so neither a token's content nor its length leaks through timing.
/// </summary>
public sealed class BearerTokens
{
    /// <summary>The longest token read from a request; a longer one is refused unread.</summary>
    public const int MaxTokenChars = 1024;

    private const string Prefix = "Bearer ";

    private readonly byte[][]? _hashes;
    private readonly bool _required;

    /// <param name="accepted">The accepted tokens; null = any well-formed token.</param>
    /// <param name="required">
    /// Whether a request without a token is refused even though <paramref name="accepted"/> is null (a token is always
    /// required when <paramref name="accepted"/> is given). False with no accepted tokens lets every request in.
    /// </param>
    public BearerTokens(IReadOnlyList<string>? accepted, bool required = false)
    {
        _hashes = accepted is null ? null : [.. accepted.Select(t => SHA256.HashData(Encoding.UTF8.GetBytes(t)))];
        _required = required || accepted is not null;
    }

    /// <summary>Whether <paramref name="request"/> carries an accepted token (or none is required).</summary>
    public bool IsAuthorized(HttpRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (!_required)
        {
            return true;
        }

        if (!TryGetPresented(request, out ReadOnlySpan<char> presented))
        {
            return false;
        }

        if (_hashes is null)
        {
            return true;
        }

        Span<byte> utf8 = stackalloc byte[MaxTokenChars * 3];
        int length = Encoding.UTF8.GetBytes(presented, utf8);
        Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(utf8[..length], hash);
        bool accepted = false;
        foreach (byte[] expected in _hashes)
        {
            // Every accepted token is compared, whichever matches.
            accepted |= CryptographicOperations.FixedTimeEquals(hash, expected);
        }

        return accepted;
    }

    /// <summary>The token a request presents (trimmed, 1 to <see cref="MaxTokenChars"/> characters), else null.</summary>
    public static string? Presented(HttpRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return TryGetPresented(request, out ReadOnlySpan<char> presented) ? presented.ToString() : null;
    }

    private static bool TryGetPresented(HttpRequest request, out ReadOnlySpan<char> token)
    {
        token = default;
        StringValues values = request.Headers.Authorization;
        if (values.Count != 1 || values[0] is not { } header || !header.StartsWith(Prefix, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        token = header.AsSpan(Prefix.Length).Trim();
        return token.Length is > 0 and <= MaxTokenChars;
    }
}
