using System.Net;
using System.Text;
using KvFetcher.Store;
using KvFetcher.Store.Remote;
using KvFetcher.Store.Tests;

namespace KvFetcher.Server.Tests;

/// <summary>Bearer-token checks and option validation.</summary>
public sealed class AuthAndOptionsTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory]
    [InlineData(null)]
    [InlineData("wrong-token-0123456789abcdef")]
    [InlineData("test-token-0123456789abcde")] // a prefix of the real one
    [InlineData("test-token-0123456789abcdefg")] // the real one and more
    public async Task V1Routes_MissingOrWrongToken_Answer401AndWriteNothing(string? token)
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        ObjectKey key = TestObjects.KeyFor("guarded");
        byte[] container = TestObjects.Container(key, 1000, 1);
        await using (HttpKvStore owner = harness.Client())
        {
            await owner.PutAsync(key, container, Ct);
        }

        using HttpClient raw = harness.Raw(token);
        ObjectKey other = TestObjects.KeyFor("intruder");
        var requests = new List<HttpRequestMessage>
        {
            new(HttpMethod.Put, $"/v1/objects/{other}") { Content = new ByteArrayContent(TestObjects.Container(other, 100, 1)) },
            new(HttpMethod.Put, $"/v1/objects/{key}") { Content = new ByteArrayContent(TestObjects.Container(key, 100, 2)) },
            new(HttpMethod.Get, $"/v1/objects/{key}"),
            new(HttpMethod.Head, $"/v1/objects/{key}"),
            new(HttpMethod.Delete, $"/v1/objects/{key}"),
            new(HttpMethod.Post, "/v1/lookup") { Content = new StringContent($"{{\"keys\":[\"{key}\"]}}", Encoding.UTF8, "application/json") },
            new(HttpMethod.Get, "/v1/stats"),
        };
        foreach (HttpRequestMessage request in requests)
        {
            using (request)
            using (HttpResponseMessage response = await raw.SendAsync(request, Ct))
            {
                Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
                Assert.Equal("Bearer", response.Headers.WwwAuthenticate.Single().Scheme);
            }
        }

        await using HttpKvStore client = harness.Client();
        Assert.Equal(container, await client.GetBytesAsync(key, cancellationToken: Ct));
        Assert.Null(await client.GetBytesAsync(other, cancellationToken: Ct));
        Assert.Single(harness.ObjectFiles());
    }

    [Fact]
    public async Task Client_WrongToken_ThrowsKvStoreExceptionNamingTheToken()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await using HttpKvStore client = harness.Client(token: "not-the-token-0123456789");
        ObjectKey key = TestObjects.KeyFor("any");
        KvStoreException get = await Assert.ThrowsAsync<KvStoreException>(async () => await client.GetBytesAsync(key, cancellationToken: Ct));
        Assert.Contains("401", get.Message, StringComparison.Ordinal);
        Assert.Contains("token", get.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<KvStoreException>(async () => await client.PutAsync(key, TestObjects.Container(key, 10, 1), Ct));
        await Assert.ThrowsAsync<KvStoreException>(async () => await client.LongestPrefixAsync([key], Ct));
        Assert.Empty(harness.ObjectFiles());
    }

    [Fact]
    public async Task AllowAnonymous_OnLoopback_ServesWithoutToken()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync(o => o with { Token = null, AllowAnonymous = true });
        await using HttpKvStore client = harness.Client(token: null);
        ObjectKey key = TestObjects.KeyFor("open");
        byte[] container = TestObjects.Container(key, 100, 1);
        await client.PutAsync(key, container, Ct);
        Assert.Equal(container, await client.GetBytesAsync(key, cancellationToken: Ct));
    }

    public static TheoryData<string, string> InvalidOptions => new()
    {
        { "no-token", "bearer token is required" },
        { "anonymous-on-all-interfaces", "non-loopback" },
        { "anonymous-on-lan-ip", "non-loopback" },
        { "token-and-anonymous", "choose one" },
        { "short-token", "at least 16" },
        { "token-with-space", "printable ASCII" },
        { "no-urls", "At least one URL" },
        { "ftp-url", "not an http:// or https:// URL" },
        { "url-with-path", "only a scheme, a host and a port" },
        { "host-name", "must be an IP address, localhost or *" },
        { "https-without-cert", "PEM certificate" },
        { "cert-without-https", "no URL is https" },
        { "zero-capacity", "capacity must be positive" },
        { "tiny-max-object", "largest object size" },
        { "zero-timeout", "request timeout must be positive" },
        { "empty-directory", "data directory is required" },
    };

    [Theory]
    [MemberData(nameof(InvalidOptions))]
    public async Task StartAsync_InvalidOptions_ThrowsOneClearLineBeforeBinding(string @case, string expected)
    {
        string directory = ServerHarness.NewTempDirectory();
        var valid = new StoreServerOptions { DataDirectory = directory, Token = ServerHarness.Token, Urls = ["http://127.0.0.1:0"] };
        StoreServerOptions options = @case switch
        {
            "no-token" => valid with { Token = null },
            "anonymous-on-all-interfaces" => valid with { Token = null, AllowAnonymous = true, Urls = ["http://127.0.0.1:0", "http://*:0"] },
            "anonymous-on-lan-ip" => valid with { Token = null, AllowAnonymous = true, Urls = ["http://10.1.2.3:7070"] },
            "token-and-anonymous" => valid with { AllowAnonymous = true },
            "short-token" => valid with { Token = "short" },
            "token-with-space" => valid with { Token = "a token with spaces in it" },
            "no-urls" => valid with { Urls = [] },
            "ftp-url" => valid with { Urls = ["ftp://127.0.0.1:21"] },
            "url-with-path" => valid with { Urls = ["http://127.0.0.1:7070/store"] },
            "host-name" => valid with { Urls = ["http://example.com:7070"] },
            "https-without-cert" => valid with { Urls = ["https://127.0.0.1:0"] },
            "cert-without-https" => valid with { CertificateFile = "cert.pem", CertificateKeyFile = "key.pem" },
            "zero-capacity" => valid with { CapacityBytes = 0 },
            "tiny-max-object" => valid with { MaxObjectBytes = 10 },
            "zero-timeout" => valid with { RequestTimeout = TimeSpan.Zero },
            "empty-directory" => valid with { DataDirectory = " " },
            _ => throw new ArgumentOutOfRangeException(nameof(@case)),
        };

        ArgumentException validate = Assert.Throws<ArgumentException>(options.Validate);
        Assert.Contains(expected, validate.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', validate.Message);
        ArgumentException start = await Assert.ThrowsAsync<ArgumentException>(() => StoreServer.StartAsync(options, Ct));
        Assert.Equal(validate.Message, start.Message);
        Assert.False(Directory.Exists(directory)); // refused before the store was opened
    }

    [Fact]
    public async Task StartAsync_PortInUse_ThrowsIOExceptionAndReleasesTheStore()
    {
        await using ServerHarness first = await ServerHarness.StartAsync();
        string directory = ServerHarness.NewTempDirectory();
        try
        {
            var options = new StoreServerOptions { DataDirectory = directory, Token = ServerHarness.Token, Urls = [first.Address.GetLeftPart(UriPartial.Authority)] };
            await Assert.ThrowsAnyAsync<IOException>(() => StoreServer.StartAsync(options, Ct));

            // The store was closed again: a server can open the same directory now.
            await using StoreServer again = await StoreServer.StartAsync(options with { Urls = ["http://127.0.0.1:0"] }, Ct);
            Assert.Single(again.Addresses);
        }
        finally
        {
            ServerHarness.DeleteDirectory(directory);
        }
    }

    [Fact]
    public void ClientOptions_Invalid_Throw()
    {
        var valid = new HttpKvStoreOptions { BaseAddress = new Uri("http://127.0.0.1:1") };
        valid.Validate();
        Assert.Throws<ArgumentException>((valid with { BaseAddress = new Uri("ftp://127.0.0.1") }).Validate);
        Assert.Throws<ArgumentException>((valid with { RequestTimeout = TimeSpan.Zero }).Validate);
        Assert.Throws<ArgumentException>((valid with { MaxRetries = -1 }).Validate);
        Assert.Throws<ArgumentException>((valid with { HttpVersion = HttpVersion.Version30 }).Validate);
        Assert.Throws<ArgumentException>((valid with { Token = "two words" }).Validate);
        Assert.Throws<ArgumentException>((valid with { TrustedCertificateFile = "/nonexistent.pem" }).Validate);
    }
}
