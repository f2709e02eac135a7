using System.Buffers;
using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;

namespace KvFetcher.Core.Containers;

/// <summary>
/// Makes the KV store untrusted: one deployment secret from which every tenant gets its own chunk MAC key
/// (HKDF-SHA256, info = domain + tenant salt). Writers seal each container with an HMAC-SHA256 tag under the tenant's
/// key; readers that hold the authenticator refuse any container whose tag does not verify, so a chunk forged by
/// someone who can write to the store, one copied from another tenant, or one written by another deployment is a
/// miss (the engine computes it). The checksum alone only catches accidents; see docs/SECURITY.md for the trust model.
/// </summary>
public sealed class ChunkAuthenticator
{
    /// <summary>The least secret length accepted (bytes).</summary>
    public const int MinSecretBytes = 32;

    /// <summary>Printable ASCII, tab and line endings: a secret file made only of these is text.</summary>
    private static readonly SearchValues<byte> TextBytes = SearchValues.Create("\t\n\r !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"u8);

    private const int MaxCachedTenants = 4096;
    private static ReadOnlySpan<byte> ExtractSalt => "kvfetch/chunk-mac/v1"u8;
    private const string TenantInfo = "kvfetch/chunk-mac/v1/tenant:";

    private readonly byte[] _pseudoRandomKey;
    private readonly ConcurrentDictionary<string, ChunkMacKey> _tenants = new(StringComparer.Ordinal);

    /// <param name="secret">The deployment secret (at least <see cref="MinSecretBytes"/> bytes of high entropy).</param>
    public ChunkAuthenticator(ReadOnlySpan<byte> secret)
    {
        if (secret.Length < MinSecretBytes)
        {
            throw new ArgumentException($"A chunk secret has at least {MinSecretBytes} bytes; got {secret.Length}.", nameof(secret));
        }

        _pseudoRandomKey = new byte[SHA256.HashSizeInBytes];
        HKDF.Extract(HashAlgorithmName.SHA256, secret, ExtractSalt, _pseudoRandomKey);
    }

    /// <summary>
    /// Reads the deployment secret from <paramref name="path"/> (raw bytes; the line ending of a text secret, one of printable ASCII, is ignored, while a binary secret is used whole). The file
    /// must not be readable or writable by group or others, as SSH requires of private keys.
    /// </summary>
    /// <exception cref="InvalidKvDataException">The file is missing, too short or too open (the message says which).</exception>
    public static ChunkAuthenticator FromSecretFile(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        byte[] secret;
        try
        {
            if (!OperatingSystem.IsWindows())
            {
                UnixFileMode mode = File.GetUnixFileMode(path);
                const UnixFileMode Open = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite;
                if ((mode & Open) != 0)
                {
                    throw new InvalidKvDataException($"chunk secret {path}: mode {Convert.ToString((int)mode, 8)} lets group or others read or write it; chmod 600 it.");
                }
            }

            secret = File.ReadAllBytes(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new InvalidKvDataException($"chunk secret {path}: {ex.Message}", ex);
        }

        // A text secret (e.g. `openssl rand -hex 32 > FILE`) loses its line ending; a binary one is used whole, so that
        // 32 random bytes that happen to end in '\n' or '\r' stay 32 bytes.
        int length = secret.Length;
        if (!secret.AsSpan().ContainsAnyExcept(TextBytes))
        {
            while (length > 0 && secret[length - 1] is (byte)'\n' or (byte)'\r')
            {
                length--;
            }
        }

        try
        {
            if (length < MinSecretBytes)
            {
                throw new InvalidKvDataException($"chunk secret {path}: {length} bytes; it needs at least {MinSecretBytes} (e.g. head -c 32 /dev/urandom > FILE).");
            }

            return new ChunkAuthenticator(secret.AsSpan(0, length));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
        }
    }

    /// <summary>Writes a new random secret of 32 bytes to <paramref name="path"/> with mode 600 (fails if it exists).</summary>
    public static void CreateSecretFile(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        Span<byte> secret = stackalloc byte[MinSecretBytes];
        RandomNumberGenerator.Fill(secret);
        using (var file = new FileStream(path, options))
        {
            file.Write(secret);
        }

        CryptographicOperations.ZeroMemory(secret);
    }

    /// <summary>The MAC key of the tenant whose chunk keys are salted with <paramref name="tenantSalt"/>.</summary>
    public ChunkMacKey ForTenant(string tenantSalt)
    {
        ArgumentNullException.ThrowIfNull(tenantSalt);
        if (_tenants.TryGetValue(tenantSalt, out ChunkMacKey? key))
        {
            return key;
        }

        byte[] info = Encoding.UTF8.GetBytes(TenantInfo + tenantSalt);
        key = new ChunkMacKey(HKDF.Expand(HashAlgorithmName.SHA256, _pseudoRandomKey, ChunkMacKey.KeySize, info));
        if (_tenants.Count >= MaxCachedTenants)
        {
            _tenants.Clear(); // bounded memory for servers with many tenants; keys are cheap to derive again
        }

        return _tenants.GetOrAdd(tenantSalt, key);
    }
}

/// <summary>One tenant's chunk MAC key: HMAC-SHA256 tags over a container's bytes.</summary>
public sealed class ChunkMacKey
{
    public const int KeySize = 32;

    /// <summary>Bytes of a tag.</summary>
    public const int TagSize = HMACSHA256.HashSizeInBytes;

    private readonly byte[] _key;

    internal ChunkMacKey(byte[] key) => _key = key;

    /// <summary>Writes the tag of <paramref name="data"/> to <paramref name="tag"/> (<see cref="TagSize"/> bytes).</summary>
    public void ComputeTag(ReadOnlySpan<byte> data, Span<byte> tag) => HMACSHA256.HashData(_key, data, tag);

    /// <summary>Whether <paramref name="tag"/> is the tag of <paramref name="data"/> (constant-time compare).</summary>
    public bool Verify(ReadOnlySpan<byte> data, ReadOnlySpan<byte> tag)
    {
        Span<byte> actual = stackalloc byte[TagSize];
        ComputeTag(data, actual);
        return tag.Length == TagSize && CryptographicOperations.FixedTimeEquals(actual, tag);
    }

    /// <summary>An incremental HMAC under this key, for a tag over data written in parts.</summary>
    internal IncrementalHash CreateHmac() => IncrementalHash.CreateHMAC(HashAlgorithmName.SHA256, _key);

    public override string ToString() => "ChunkMacKey(hidden)";
}
