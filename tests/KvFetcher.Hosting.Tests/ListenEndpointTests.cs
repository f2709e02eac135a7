using System.Net;

namespace KvFetcher.Hosting.Tests;

/// <summary>Parsing the URLs a server listens on, and the certificate rules for https ones.</summary>
public sealed class ListenEndpointTests
{
    [Theory]
    [InlineData("http://127.0.0.1:7070", false, "127.0.0.1", 7070, true)]
    [InlineData("https://10.1.2.3:443", true, "10.1.2.3", 443, false)]
    [InlineData("http://[::1]:8080", false, "::1", 8080, true)]
    [InlineData("http://localhost:0", false, "127.0.0.1", 0, true)]
    [InlineData("http://LOCALHOST:9000/", false, "127.0.0.1", 9000, true)]
    [InlineData("http://127.0.0.1", false, "127.0.0.1", 80, true)]
    public void Parse_AddressOrLocalhost_GivesThatAddressAndPort(string url, bool https, string address, int port, bool loopback)
    {
        ListenEndpoint endpoint = ListenEndpoint.Parse(url);

        Assert.Equal(url, endpoint.Url);
        Assert.Equal(https, endpoint.Https);
        Assert.Equal(IPAddress.Parse(address), endpoint.Address);
        Assert.Equal(port, endpoint.Port);
        Assert.Equal(loopback, endpoint.IsLoopback);
    }

    [Theory]
    [InlineData("http://*:7070")]
    [InlineData("http://+:7070")]
    [InlineData("https://*:7443")]
    public void Parse_Wildcard_ListensOnEveryInterfaceAndIsNotLoopback(string url)
    {
        ListenEndpoint endpoint = ListenEndpoint.Parse(url);

        Assert.Null(endpoint.Address);
        Assert.False(endpoint.IsLoopback);
        Assert.Equal(url.StartsWith("https", StringComparison.Ordinal), endpoint.Https);
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("  ", "empty")]
    [InlineData("ftp://127.0.0.1:21", "not an http:// or https:// URL")]
    [InlineData("127.0.0.1:7070", "not an http:// or https:// URL")]
    [InlineData("unix:/tmp/kvfetch.sock", "not an http:// or https:// URL")]
    [InlineData("http://127.0.0.1:7070/v1", "only a scheme, a host and a port")]
    [InlineData("http://127.0.0.1:7070/?a=1", "only a scheme, a host and a port")]
    [InlineData("http://user:pass@127.0.0.1:7070", "only a scheme, a host and a port")]
    [InlineData("http://example.com:7070", "must be an IP address, localhost or *")]
    public void Parse_InvalidUrl_ThrowsArgumentExceptionSayingWhy(string url, string reason)
    {
        ArgumentException ex = Assert.Throws<ArgumentException>(() => ListenEndpoint.Parse(url));

        Assert.Contains(reason, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ParseAll_NoUrl_ThrowsArgumentException()
    {
        Assert.Contains("At least one URL", Assert.Throws<ArgumentException>(() => ListenEndpoint.ParseAll([])).Message, StringComparison.Ordinal);
        Assert.Contains("At least one URL", Assert.Throws<ArgumentException>(() => ListenEndpoint.ParseAll(null)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ParseAll_SeveralUrls_ParsesEachInOrderAndNamesTheBadOne()
    {
        ListenEndpoint[] endpoints = ListenEndpoint.ParseAll(["http://127.0.0.1:1", "http://*:2"]);

        Assert.Equal([1, 2], endpoints.Select(e => e.Port));
        Assert.Contains("'http://host:3'", Assert.Throws<ArgumentException>(() => ListenEndpoint.ParseAll(["http://127.0.0.1:1", "http://host:3"])).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CheckCertificate_HttpsWithoutCertificateOrCertificateWithoutHttps_Throws()
    {
        ListenEndpoint[] https = ListenEndpoint.ParseAll(["https://127.0.0.1:0"]);
        ListenEndpoint[] http = ListenEndpoint.ParseAll(["http://127.0.0.1:0"]);
        string missing = Path.Combine(Path.GetTempPath(), $"kvf-missing-{Guid.NewGuid():N}.pem");

        Assert.Contains("needs a PEM certificate", Assert.Throws<ArgumentException>(() => ListenEndpoint.CheckCertificate(https, null, null)).Message, StringComparison.Ordinal);
        Assert.Contains("does not exist", Assert.Throws<ArgumentException>(() => ListenEndpoint.CheckCertificate(https, missing, missing)).Message, StringComparison.Ordinal);
        Assert.Contains("no URL is https", Assert.Throws<ArgumentException>(() => ListenEndpoint.CheckCertificate(http, missing, null)).Message, StringComparison.Ordinal);
        ListenEndpoint.CheckCertificate(http, null, null);
    }
}
