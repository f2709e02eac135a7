using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Primitives;

namespace KvFetcher.Server;

/// <summary>
/// Checks <c>Authorization: Bearer …</c> against the configured token in constant time: both sides are hashed to
/// SHA-256 first, so neither the content nor the length of the token leaks through timing.
/// </summary>
internal sealed class BearerTokenCheck
{
    private const int MaxTokenChars = 1024;
    private const string Scheme = "Bearer ";

    private readonly byte[]? _expected;

    /// <param name="token">The token; null = every request is allowed (anonymous, loopback only).</param>
    public BearerTokenCheck(string? token) => _expected = token is null ? null : SHA256.HashData(Encoding.UTF8.GetBytes(token));

    public bool IsAuthorized(HttpRequest request)
    {
        if (_expected is null)
        {
            return true;
        }

        StringValues values = request.Headers.Authorization;
        if (values.Count != 1 || values[0] is not { } header || !header.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        ReadOnlySpan<char> presented = header.AsSpan(Scheme.Length).Trim();
        if (presented.IsEmpty || presented.Length > MaxTokenChars)
        {
            return false;
        }

        Span<byte> utf8 = stackalloc byte[MaxTokenChars * 3];
        int length = Encoding.UTF8.GetBytes(presented, utf8);
        Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(utf8[..length], hash);
        return CryptographicOperations.FixedTimeEquals(hash, _expected);
    }
}
