using System.Security.Cryptography;
using System.Text;

namespace KvFetcher.Serving;

/// <summary>
/// Turns who is asking into the tenant salt of chunk keys, so a context is only ever reused within one tenant. A named
/// tenant (the <c>X-KvFetcher-Tenant</c> header, or <see cref="KvFetcherOptions.DefaultTenant"/>) is used as the salt
/// as it is, the same as <c>kvfetch warm --tenant</c>; a tenant derived from an API key is <c>key:</c> and a hash of the
/// key (the key itself never reaches the store), optionally narrowed by a named tenant. Names are restricted to
/// <c>[A-Za-z0-9._-]</c>, so no name can pass for a key's tenant.
/// </summary>
public static class TenantSalts
{
    public const int MaxTenantLength = 128;

    /// <summary>Whether <paramref name="tenant"/> is a valid tenant name (empty is the shared default tenant).</summary>
    public static bool IsValidName(string tenant)
    {
        ArgumentNullException.ThrowIfNull(tenant);
        if (tenant.Length > MaxTenantLength)
        {
            return false;
        }

        foreach (char c in tenant)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>The salt of API key <paramref name="apiKey"/>'s tenant, narrowed by <paramref name="tenant"/> when not empty.</summary>
    public static string ForKey(string apiKey, string tenant = "")
    {
        ArgumentNullException.ThrowIfNull(apiKey);
        ArgumentNullException.ThrowIfNull(tenant);
        string salt = "key:" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(apiKey)).AsSpan(0, 16));
        return tenant.Length == 0 ? salt : salt + "/" + tenant;
    }
}
