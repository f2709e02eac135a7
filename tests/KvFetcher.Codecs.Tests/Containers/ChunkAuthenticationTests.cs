using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.Security.Cryptography;
using System.Text;
using KvFetcher.Codecs.Raw;
using KvFetcher.Core;
using KvFetcher.Core.Containers;

namespace KvFetcher.Codecs.Tests.Containers;

public sealed class ChunkAuthenticationTests : IDisposable
{
    private static readonly ChunkAuthenticator s_deployment = new(Enumerable.Range(0, 32).Select(i => (byte)i).ToArray());
    private static readonly ChunkAuthenticator s_otherDeployment = new(Enumerable.Range(1, 32).Select(i => (byte)i).ToArray());
    private readonly string _directory = Directory.CreateTempSubdirectory("kvf-secret-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private static (byte[] Container, ChunkExpectation Expected, byte[] Kv) Sealed(ChunkMacKey? mac)
    {
        (byte[] plain, ChunkExpectation expected, byte[] kv) = ChunkContainerTests.Build(RawCodec.Instance, 0);
        ChunkHeader header = ChunkContainer.Read(plain, out ReadOnlySpan<byte> parameters, out ReadOnlySpan<byte> payload);
        var output = new ArrayBufferWriter<byte>();
        ChunkContainer.Write(header, parameters, payload, output, mac);
        return (output.WrittenSpan.ToArray(), expected, kv);
    }

    [Fact]
    public void Decode_SealedUnderTenantKey_RoundTripsAndStoresStillSeeItIntact()
    {
        ChunkMacKey mac = s_deployment.ForTenant("tenant-a");
        (byte[] container, ChunkExpectation expected, byte[] kv) = Sealed(mac);

        Assert.True(ChunkContainer.IsIntact(container)); // a store without the secret still verifies the checksum
        var decoded = new byte[kv.Length];
        ChunkHeader header = RawCodec.Instance.DecodeContainer(container, expected with { Mac = mac }, decoded);
        Assert.True(header.Authenticated);
        Assert.Equal(kv, decoded);
        Assert.Equal(ChunkContainer.GetSize(0, kv.Length, authenticated: true), container.Length);
    }

    [Fact]
    public void Decode_ForgedWithChecksumRecomputed_RefusedOnlyByAReaderWithTheKey()
    {
        // An attacker who can write to the store: other KV under the right key, model and position, checksum recomputed.
        ChunkMacKey mac = s_deployment.ForTenant("tenant-a");
        (byte[] container, ChunkExpectation expected, byte[] kv) = Sealed(mac);
        int payloadStart = ChunkContainer.HeaderSize;
        container.AsSpan(payloadStart, 64).Fill(0x55);
        int end = container.Length - ChunkContainer.ChecksumSize;
        BinaryPrimitives.WriteUInt64LittleEndian(container.AsSpan(end), XxHash3.HashToUInt64(container.AsSpan(0, end)));

        Assert.True(ChunkContainer.IsIntact(container));
        var decoded = new byte[kv.Length];
        RawCodec.Instance.DecodeContainer(container, expected, decoded); // the checksum alone accepts it
        Assert.NotEqual(kv, decoded);
        ChunkAuthenticationException ex = Assert.Throws<ChunkAuthenticationException>(() => RawCodec.Instance.DecodeContainer(container, expected with { Mac = mac }, decoded));
        Assert.Contains("MAC tag", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Decode_UnsealedOrOtherTenantOrOtherDeployment_Refused()
    {
        ChunkMacKey mac = s_deployment.ForTenant("tenant-a");
        (byte[] plain, ChunkExpectation expected, byte[] kv) = Sealed(null);
        (byte[] otherTenant, _, _) = Sealed(s_deployment.ForTenant("tenant-b"));
        (byte[] otherDeployment, _, _) = Sealed(s_otherDeployment.ForTenant("tenant-a"));
        var decoded = new byte[kv.Length];

        Assert.Contains("no MAC tag", Assert.Throws<ChunkAuthenticationException>(() => RawCodec.Instance.DecodeContainer(plain, expected with { Mac = mac }, decoded)).Message, StringComparison.Ordinal);
        Assert.Throws<ChunkAuthenticationException>(() => RawCodec.Instance.DecodeContainer(otherTenant, expected with { Mac = mac }, decoded));
        Assert.Throws<ChunkAuthenticationException>(() => RawCodec.Instance.DecodeContainer(otherDeployment, expected with { Mac = mac }, decoded));
        Assert.Same(mac, s_deployment.ForTenant("tenant-a"));
    }

    [Fact]
    public void Decode_SealedContainerEveryByteFlipped_NeverAccepted()
    {
        ChunkMacKey mac = s_deployment.ForTenant("tenant-a");
        (byte[] container, ChunkExpectation expected, byte[] kv) = Sealed(mac);
        var decoded = new byte[kv.Length];
        for (int i = 0; i < container.Length; i += 7)
        {
            byte[] mutated = (byte[])container.Clone();
            mutated[i] ^= 0x10;
            Assert.ThrowsAny<InvalidKvDataException>(() => RawCodec.Instance.DecodeContainer(mutated, expected with { Mac = mac }, decoded));
        }
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void FromSecretFile_OpenModeOrShortSecret_OneLineError()
    {
        string path = Path.Combine(_directory, "secret");
        ChunkAuthenticator.CreateSecretFile(path);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        Assert.Equal(32, File.ReadAllBytes(path).Length);
        _ = ChunkAuthenticator.FromSecretFile(path);

        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);
        Assert.Contains("chmod 600", Assert.Throws<InvalidKvDataException>(() => ChunkAuthenticator.FromSecretFile(path)).Message, StringComparison.Ordinal);

        string shortPath = Path.Combine(_directory, "short");
        File.WriteAllText(shortPath, "too short\n");
        File.SetUnixFileMode(shortPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        Assert.Contains("at least 32", Assert.Throws<InvalidKvDataException>(() => ChunkAuthenticator.FromSecretFile(shortPath)).Message, StringComparison.Ordinal);
        Assert.Throws<InvalidKvDataException>(() => ChunkAuthenticator.FromSecretFile(Path.Combine(_directory, "missing")));
        Assert.Throws<IOException>(() => ChunkAuthenticator.CreateSecretFile(path)); // never overwrites a secret
    }
    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void FromSecretFile_BinaryEndingInNewlineOrTextWithNewline_BinaryWholeTextTrimmed()
    {
        byte[] binary = new byte[32];
        RandomNumberGenerator.Fill(binary);
        binary[0] = 0; // not text
        binary[^1] = (byte)'\n';
        string binaryPath = WriteSecret("binary", binary);
        Assert.Equal(Tag(new ChunkAuthenticator(binary)), Tag(ChunkAuthenticator.FromSecretFile(binaryPath)));

        byte[] text = Encoding.ASCII.GetBytes(Convert.ToHexString(RandomNumberGenerator.GetBytes(32)));
        string textPath = WriteSecret("text", [.. text, (byte)'\r', (byte)'\n']);
        Assert.Equal(Tag(new ChunkAuthenticator(text)), Tag(ChunkAuthenticator.FromSecretFile(textPath)));
    }

    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    private string WriteSecret(string name, byte[] bytes)
    {
        string path = Path.Combine(_directory, name);
        File.WriteAllBytes(path, bytes);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return path;
    }

    private static byte[] Tag(ChunkAuthenticator authenticator)
    {
        byte[] tag = new byte[32];
        authenticator.ForTenant("tenant").ComputeTag("chunk"u8, tag);
        return tag;
    }
}
