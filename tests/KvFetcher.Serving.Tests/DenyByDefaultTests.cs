using System.Net;
using System.Text;
using KvFetcher.Tests;
using Microsoft.AspNetCore.Routing;

namespace KvFetcher.Serving.Tests;

/// <summary>
/// Deny by default on serve-llm: with API keys (or <see cref="LlmServerOptions.TenantFromKey"/>) every route it maps
/// needs a key, whatever the method or the spelling of the path, except <c>/healthz</c> and, with
/// <see cref="LlmServerOptions.PublicMetrics"/>, <c>/metrics</c>.
/// </summary>
public sealed class DenyByDefaultTests(ServingFixture fixture) : IClassFixture<ServingFixture>
{
    private const string Key = "llm-test-key-0123456789";
    private const string WrongKey = "not-the-key-0123456789";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory]
    [InlineData("keys", false)]
    [InlineData("keys", true)]
    [InlineData("tenant-from-key", false)]
    public async Task EveryRoute_AnyMethodAndSpellingWithoutValidKey_NeverAnswers2xx(string mode, bool publicMetrics)
    {
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(store: null), o => mode == "keys"
            ? o with { ApiKeys = [Key], PublicMetrics = publicMetrics }
            : o with { TenantFromKey = true, PublicMetrics = publicMetrics });
        // With --tenant-from-key and no key list any key is a tenant: only requests without one are refused.
        string?[] tokens = mode == "keys" ? [null, WrongKey] : [null];
        byte[] completion = Encoding.UTF8.GetBytes("""{"prompt":"The json module","max_tokens":1,"temperature":0}""");
        string[] expectedPublic = publicMetrics ? ["/healthz", "/metrics"] : ["/healthz"];
        Uri address = server.Server.Addresses[0];
        IReadOnlyList<RouteEndpoint> routes = RouteWalk.Routes(server.Server.Services);
        Assert.True(routes.Count >= 6, $"{routes.Count} routes");

        (int sent, List<string> leaks) = await RouteWalk.WalkAsync(address, routes, expectedPublic, _ => ServingFixture.ModelId, tokens,
            method => method == "POST" ? completion : null, Ct);

        Assert.True(sent > 300, $"{sent} requests");
        Assert.True(leaks.Count == 0, $"{leaks.Count} of {sent} requests got through:\n{string.Join('\n', leaks.Take(40))}");
        Assert.Equal(expectedPublic, routes.Where(RouteWalk.IsAnonymous).Select(r => r.RoutePattern.RawText).Order(StringComparer.Ordinal).Distinct());

        // With the key, the same routes answer, in any case of the path.
        Assert.Equal(200, await RouteWalk.SendAsync(address, "GET", "/V1/MODELS", Key, cancellationToken: Ct));
        Assert.Equal(200, await RouteWalk.SendAsync(address, "POST", "/v1/completions", Key, completion, Ct));
        Assert.Equal(200, await RouteWalk.SendAsync(address, "GET", "/healthz", token: null, cancellationToken: Ct));
    }

    [Fact]
    public async Task Metrics_WithoutKey_Answers401UnlessPublic()
    {
        await using (LlmHarness guarded = await LlmHarness.StartAsync(fixture.EngineOptions(store: null), o => o with { ApiKeys = [Key] }))
        {
            using HttpResponseMessage denied = await guarded.Http.GetAsync("metrics", Ct);
            Assert.Equal(HttpStatusCode.Unauthorized, denied.StatusCode);
            Assert.Equal("Bearer", denied.Headers.WwwAuthenticate.Single().Scheme);
            string body = await denied.Content.ReadAsStringAsync(Ct);
            Assert.Contains("invalid_api_key", body, StringComparison.Ordinal);
            Assert.DoesNotContain("kvfetch_llm", body, StringComparison.Ordinal);

            using var request = new HttpRequestMessage(HttpMethod.Get, "metrics");
            request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", Key);
            using HttpResponseMessage allowed = await guarded.Http.SendAsync(request, Ct);
            Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
            Assert.Equal(1, MetricsScrape.Parse(await allowed.Content.ReadAsStringAsync(Ct)).Value("kvfetch_llm_http_requests_total", "route=metrics", "code=401"));
        }

        await using LlmHarness open = await LlmHarness.StartAsync(fixture.EngineOptions(store: null), o => o with { ApiKeys = [Key], PublicMetrics = true });
        using HttpResponseMessage response = await open.Http.GetAsync("metrics", Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("kvfetch_llm_", await response.Content.ReadAsStringAsync(Ct), StringComparison.Ordinal);
    }
}
