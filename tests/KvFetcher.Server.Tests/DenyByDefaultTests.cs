using System.Net;
using System.Text;
using KvFetcher.Store;
using KvFetcher.Store.Remote;
using KvFetcher.Store.Tests;
using KvFetcher.Tests;
using Microsoft.AspNetCore.Routing;

namespace KvFetcher.Server.Tests;

/// <summary>
/// Deny by default: every route the store server maps needs the bearer token, whatever the method or the spelling of
/// the path, except the public list (<c>/healthz</c>, and <c>/metrics</c> when <see cref="StoreServerOptions.PublicMetrics"/>).
/// </summary>
public sealed class DenyByDefaultTests
{
    private const string WrongToken = "wrong-token-0123456789abcdef";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task EveryRoute_AnyMethodAndSpellingWithoutValidToken_NeverAnswers2xx(bool publicMetrics)
    {
        await using ServerHarness harness = await ServerHarness.StartAsync(o => o with { PublicMetrics = publicMetrics });
        ObjectKey key = TestObjects.KeyFor("walked");
        byte[] container = TestObjects.Container(key, 1000, 1);
        await using (HttpKvStore owner = harness.Client())
        {
            await owner.PutAsync(key, container, Ct);
        }

        // Bodies that would succeed if a request got through: the object itself for PUT, a lookup of it for POST.
        byte[] lookup = Encoding.UTF8.GetBytes($"{{\"keys\":[\"{key}\"]}}");
        string[] expectedPublic = publicMetrics ? ["/healthz", "/metrics"] : ["/healthz"];
        IReadOnlyList<RouteEndpoint> routes = RouteWalk.Routes(harness.Server.Services);
        Assert.True(routes.Count >= 8, $"{routes.Count} routes");

        (int sent, List<string> leaks) = await RouteWalk.WalkAsync(harness.Address, routes, expectedPublic, _ => key.Value, [null, WrongToken],
            method => method switch { "PUT" => container, "POST" => lookup, _ => [] }, Ct);

        Assert.True(sent > 500, $"{sent} requests");
        Assert.True(leaks.Count == 0, $"{leaks.Count} of {sent} requests got through:\n{string.Join('\n', leaks.Take(40))}");
        Assert.Equal(expectedPublic, routes.Where(RouteWalk.IsAnonymous).Select(r => r.RoutePattern.RawText).Order(StringComparer.Ordinal).Distinct());

        // The walk changed nothing, and the routes still answer with the token, in any case of the path.
        await using HttpKvStore client = harness.Client();
        Assert.Equal(container, await client.GetBytesAsync(key, cancellationToken: Ct));
        Assert.Single(harness.ObjectFiles());
        Assert.Equal(200, await RouteWalk.SendAsync(harness.Address, "GET", "/V1/Stats", ServerHarness.Token, cancellationToken: Ct));
        Assert.Equal(200, await RouteWalk.SendAsync(harness.Address, "GET", $"/v1/objects/{key}", ServerHarness.Token, cancellationToken: Ct));
    }

    [Theory]
    [InlineData("/V1/stats")]
    [InlineData("/v1/STATS")]
    [InlineData("/V1/OBJECTS/{key}")]
    [InlineData("/v1/st%61ts")]
    [InlineData("/v1/stats/")]
    public async Task UpperCaseOrEncodedPath_WithoutToken_Answers401(string path)
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        ObjectKey key = TestObjects.KeyFor("cased");
        await using (HttpKvStore owner = harness.Client())
        {
            await owner.PutAsync(key, TestObjects.Container(key, 100, 1), Ct);
        }

        string target = path.Replace("{key}", key.Value, StringComparison.Ordinal);
        Assert.Equal(401, await RouteWalk.SendAsync(harness.Address, "GET", target, token: null, cancellationToken: Ct));
        Assert.Equal(401, await RouteWalk.SendAsync(harness.Address, "DELETE", target, token: null, cancellationToken: Ct));
        Assert.Single(harness.ObjectFiles());
    }

    [Fact]
    public async Task Metrics_WithoutToken_Answers401UnlessPublic()
    {
        await using (ServerHarness guarded = await ServerHarness.StartAsync())
        {
            using HttpClient anonymous = guarded.Raw(token: null);
            using HttpResponseMessage denied = await anonymous.GetAsync("/metrics", Ct);
            Assert.Equal(HttpStatusCode.Unauthorized, denied.StatusCode);
            Assert.DoesNotContain("kvfetch_store", await denied.Content.ReadAsStringAsync(Ct), StringComparison.Ordinal);
            using HttpClient authorized = guarded.Raw();
            using HttpResponseMessage allowed = await authorized.GetAsync("/metrics", Ct);
            Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
        }

        await using ServerHarness open = await ServerHarness.StartAsync(o => o with { PublicMetrics = true });
        using HttpClient client = open.Raw(token: null);
        using HttpResponseMessage response = await client.GetAsync("/metrics", Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("kvfetch_store_objects", await response.Content.ReadAsStringAsync(Ct), StringComparison.Ordinal);
    }

    [Fact]
    public async Task UnknownPath_WithToken_Answers404AndWithoutToken401()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        Assert.Equal(404, await RouteWalk.SendAsync(harness.Address, "GET", "/v2/stats", ServerHarness.Token, cancellationToken: Ct));
        Assert.Equal(401, await RouteWalk.SendAsync(harness.Address, "GET", "/v2/stats", token: null, cancellationToken: Ct));
        Assert.Equal(200, await RouteWalk.SendAsync(harness.Address, "GET", "/HEALTHZ", token: null, cancellationToken: Ct));
    }
}
