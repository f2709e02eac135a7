using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Primitives;

namespace KvFetcher.Serving.Api;

/// <summary>
/// Reads <c>Authorization: Bearer KEY</c> and checks it against the configured keys. Keys are compared as SHA-256
/// hashes in constant time, so neither a key's content nor its length leaks through timing.
/// </summary>
internal sealed class ApiKeyCheck
{
    private const int MaxKeyChars = 1024;
    private const string Scheme = "Bearer ";

    private readonly byte[][]? _hashes;

    /// <param name="keys">The accepted keys; null accepts any (or no) key.</param>
    public ApiKeyCheck(IReadOnlyList<string>? keys) =>
        _hashes = keys?.Select(k => SHA256.HashData(Encoding.UTF8.GetBytes(k))).ToArray();

    /// <summary>Whether keys are checked at all.</summary>
    public bool Required => _hashes is not null;

    /// <summary>The presented key, if any (well-formed, at most 1,024 characters).</summary>
    public static string? Presented(HttpRequest request)
    {
        StringValues values = request.Headers.Authorization;
        if (values.Count != 1 || values[0] is not { } header || !header.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }

        string key = header[Scheme.Length..].Trim();
        return key.Length is > 0 and <= MaxKeyChars ? key : null;
    }

    /// <summary>Whether <paramref name="key"/> is accepted (every configured key is compared, whatever matches first).</summary>
    public bool IsAccepted(string? key)
    {
        if (_hashes is null)
        {
            return true;
        }

        if (key is null)
        {
            return false;
        }

        byte[] hash = SHA256.HashData(Encoding.UTF8.GetBytes(key));
        bool accepted = false;
        foreach (byte[] expected in _hashes)
        {
            accepted |= CryptographicOperations.FixedTimeEquals(hash, expected);
        }

        return accepted;
    }
}
