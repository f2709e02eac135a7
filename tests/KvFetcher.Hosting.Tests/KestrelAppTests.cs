using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography.X509Certificates;
using KvFetcher.Tests;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using Microsoft.Extensions.Options;

namespace KvFetcher.Hosting.Tests;

/// <summary>
/// The hosting both servers share, on a small app of its own on an ephemeral loopback port: deny by default with the
/// public list, the Prometheus route, the request observer, the body limit, https, and the start-time check.
/// </summary>
public sealed class KestrelAppTests
{
    private const string Token = "hosting-token-0123456789";
    // The test app's one instrument, as the Prometheus exporter names it.
    private const string Metric = "kvf_test_metric_total";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task EveryRoute_AnyMethodAndSpellingWithoutValidToken_NeverAnswers2xx(bool publicMetrics)
    {
        await using RunningApp app = await StartAsync(publicMetrics);
        string[] expectedPublic = publicMetrics ? ["/healthz", "/metrics"] : ["/healthz"];
        IReadOnlyList<RouteEndpoint> routes = RouteWalk.Routes(app.Services);

        (int sent, List<string> leaks) = await RouteWalk.WalkAsync(app.Addresses[0], routes, expectedPublic, _ => "x", [null, "wrong-token-0123456789"],
            method => method == "POST" ? [1, 2, 3] : null, Ct);

        Assert.True(sent > 100, $"{sent} requests");
        Assert.True(leaks.Count == 0, $"{leaks.Count} of {sent} requests got through:\n{string.Join('\n', leaks.Take(40))}");
        Assert.Equal(expectedPublic, routes.Where(RouteWalk.IsAnonymous).Select(r => r.RoutePattern.RawText).Order(StringComparer.Ordinal).Distinct());
        Assert.Equal(expectedPublic, PublicRoutes.Paths(publicMetrics));
        Assert.Equal(200, await RouteWalk.SendAsync(app.Addresses[0], "GET", "/V1/SECRET/x", Token, cancellationToken: Ct));
        Assert.Equal(200, await RouteWalk.SendAsync(app.Addresses[0], "GET", "/healthz", token: null, cancellationToken: Ct));
    }

    [Fact]
    public void CreateBuilder_ConfigurationFiles_ReadOnceNotWatched()
    {
        // Watching them would watch the working directory recursively: one inotify watch per folder below it.
        WebApplicationBuilder builder = KestrelApp.CreateBuilder("kvf-test");

        FileConfigurationSource[] files = [.. ((IConfigurationBuilder)builder.Configuration).Sources.OfType<FileConfigurationSource>()];

        Assert.NotEmpty(files);
        Assert.All(files, source => Assert.False(source.ReloadOnChange, $"{source.Path} is watched for changes"));
    }

    [Fact]
    public async Task Refusal_WithoutToken_Answers401WithChallengeAndTheServersBody()
    {
        await using RunningApp app = await StartAsync(publicMetrics: false);
        using HttpClient client = Client(app, token: null);

        using HttpResponseMessage response = await client.GetAsync("/v1/secret/x", Ct);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("Bearer", response.Headers.WwwAuthenticate.Single().Scheme);
        Assert.Equal("refused\n", await response.Content.ReadAsStringAsync(Ct));
        Assert.False(response.Headers.Contains("Server"));
    }

    [Theory]
    [InlineData(false, HttpStatusCode.Unauthorized)]
    [InlineData(true, HttpStatusCode.OK)]
    public async Task Metrics_WithoutToken_ServedOnlyWhenPublic(bool publicMetrics, HttpStatusCode expected)
    {
        await using RunningApp app = await StartAsync(publicMetrics);
        using HttpClient anonymous = Client(app, token: null);
        using HttpClient authorized = Client(app, Token);

        using HttpResponseMessage response = await anonymous.GetAsync("/metrics", Ct);
        using HttpResponseMessage withToken = await authorized.GetAsync("/metrics", Ct);

        Assert.Equal(expected, response.StatusCode);
        Assert.Equal(HttpStatusCode.OK, withToken.StatusCode);
        Assert.Equal(PublicRoutes.MetricsContentType, withToken.Content.Headers.ContentType!.ToString());
        var scrape = MetricsScrape.Parse(await withToken.Content.ReadAsStringAsync(Ct));
        Assert.Equal(7, scrape.Value(Metric));
        Assert.Equal("counter", scrape.TypeOf(Metric));
        Assert.Equal("kvfetch-hosting-tests", scrape.LabelsOf("target_info").Single()["service_name"]);
    }

    [Fact]
    public async Task CreateBuilder_JsonFormatterInConfiguration_ConsoleUsesItWithKvFetcherAtInformation()
    {
        WebApplicationBuilder builder = KestrelApp.CreateBuilder("kvfetch-hosting-tests");
        builder.Configuration["Logging:Console:FormatterName"] = "json";
        await using WebApplication app = builder.Build();

        ILoggerFactory loggers = app.Services.GetRequiredService<ILoggerFactory>();
        Assert.Equal("json", app.Services.GetRequiredService<IOptionsMonitor<ConsoleLoggerOptions>>().CurrentValue.FormatterName);
        Assert.True(loggers.CreateLogger("KvFetcher.Serving.Scheduling.EngineScheduler").IsEnabled(LogLevel.Information));
        Assert.False(loggers.CreateLogger("Microsoft.AspNetCore.Hosting.Diagnostics").IsEnabled(LogLevel.Information));
        Assert.True(loggers.CreateLogger("Microsoft.AspNetCore.Hosting.Diagnostics").IsEnabled(LogLevel.Warning));
    }

    [Fact]
    public async Task CreateBuilder_LevelInConfiguration_OverridesTheDefault()
    {
        WebApplicationBuilder builder = KestrelApp.CreateBuilder("kvfetch-hosting-tests");
        builder.Configuration["Logging:LogLevel:KvFetcher"] = "Warning";
        await using WebApplication app = builder.Build();

        ILoggerFactory loggers = app.Services.GetRequiredService<ILoggerFactory>();
        Assert.False(loggers.CreateLogger("KvFetcher.Serving.Scheduling.EngineScheduler").IsEnabled(LogLevel.Information));
        Assert.Equal("simple", app.Services.GetRequiredService<IOptionsMonitor<ConsoleLoggerOptions>>().CurrentValue.FormatterName ?? "simple");
    }

    [Fact]
    public async Task UseRequestObserver_RefusedAndUnmatchedRequests_ObservedWithRouteAndStatus()
    {
        var observed = new BlockingCollection<(string Route, int Status)>();
        await using RunningApp app = await StartAsync(publicMetrics: false, observe: (route, status, elapsed) =>
        {
            Assert.True(elapsed >= TimeSpan.Zero);
            observed.Add((route, status));
        });
        using HttpClient anonymous = Client(app, token: null);
        using HttpClient authorized = Client(app, Token);

        (await anonymous.GetAsync("/v1/secret/x", Ct)).Dispose();
        Assert.Equal(("secret", 401), Next(observed));
        (await authorized.GetAsync("/v1/secret/x", Ct)).Dispose();
        Assert.Equal(("secret", 200), Next(observed));
        (await authorized.GetAsync("/v2/nothing", Ct)).Dispose();
        Assert.Equal(("other", 404), Next(observed));
        (await anonymous.GetAsync("/v2/nothing", Ct)).Dispose();
        Assert.Equal(("other", 401), Next(observed));
        (await anonymous.GetAsync("/healthz", Ct)).Dispose();
        Assert.Equal(("healthz", 200), Next(observed));
    }

    [Theory]
    [InlineData(1024, HttpStatusCode.OK)]
    [InlineData(1025, HttpStatusCode.RequestEntityTooLarge)]
    public async Task RequestBody_OverTheLimit_RefusedWith413(int length, HttpStatusCode expected)
    {
        await using RunningApp app = await StartAsync(publicMetrics: false);
        using HttpClient client = Client(app, Token);

        using HttpResponseMessage response = await client.PostAsync("/v1/echo", new ByteArrayContent(new byte[length]), Ct);

        Assert.Equal(expected, response.StatusCode);
    }

    [Fact]
    public async Task StartAsync_AnonymousRouteOffThePublicList_ThrowsBeforeBinding()
    {
        WebApplication app = Build(publicMetrics: false, observe: null);
        app.MapGet("/v1/open", () => "open").AllowAnonymous();

        InvalidOperationException ex = await Assert.ThrowsAsync<InvalidOperationException>(() => KestrelApp.StartAsync(app, owned: null, stopTimeout: null, Ct));

        Assert.Contains("'/v1/open'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task CreateBuilder_HttpsEndpoint_ServesTlsWithHttp2()
    {
        string directory = Directory.CreateTempSubdirectory("kvf-hosting-").FullName;
        try
        {
            (string certificate, string key) = TestCertificates.WriteSelfSigned(directory);
            await using RunningApp app = await StartAsync(publicMetrics: false, urls: ["https://127.0.0.1:0"], certificate: certificate, key: key);
            using X509Certificate2 trusted = X509Certificate2.CreateFromPemFile(certificate, key);
            using var handler = new SocketsHttpHandler();
            handler.SslOptions.RemoteCertificateValidationCallback = (_, presented, _, _) => presented is not null && presented.GetCertHashString() == trusted.GetCertHashString();
            using var client = new HttpClient(handler) { BaseAddress = app.Addresses[0], DefaultRequestVersion = HttpVersion.Version20 };

            using HttpResponseMessage response = await client.GetAsync("/healthz", Ct);

            Assert.Equal("https", app.Addresses[0].Scheme);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(HttpVersion.Version20, response.Version);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void CreateBuilder_CertificateThatDoesNotLoad_ThrowsArgumentException()
    {
        string directory = Directory.CreateTempSubdirectory("kvf-hosting-").FullName;
        try
        {
            string file = Path.Combine(directory, "bad.pem");
            File.WriteAllText(file, "not a certificate");

            ArgumentException ex = Assert.Throws<ArgumentException>(() => Build(publicMetrics: false, observe: null, urls: ["https://127.0.0.1:0"], certificate: file, key: file));

            Assert.Contains("Cannot load the certificate", ex.Message, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    private static (string, int) Next(BlockingCollection<(string Route, int Status)> observed) =>
        observed.TryTake(out (string Route, int Status) item, 10_000, Ct) ? item : throw new TimeoutException("no request observed within 10 s");

    private static HttpClient Client(RunningApp app, string? token)
    {
        var client = new HttpClient { BaseAddress = app.Addresses[0] };
        if (token is not null)
        {
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return client;
    }

    private static Task<RunningApp> StartAsync(bool publicMetrics, Action<string, int, TimeSpan>? observe = null, string[]? urls = null, string? certificate = null, string? key = null) =>
        KestrelApp.StartAsync(Build(publicMetrics, observe, urls, certificate, key), owned: null, stopTimeout: TimeSpan.FromSeconds(5), Ct);

    /// <summary>A server as KvFetcher's are built: observer, bearer check, its routes, then the public ones.</summary>
    private static WebApplication Build(bool publicMetrics, Action<string, int, TimeSpan>? observe, string[]? urls = null, string? certificate = null, string? key = null)
    {
        WebApplication app = KestrelApp.CreateBuilder(new KestrelAppOptions
        {
            ApplicationName = "kvfetch-hosting-tests",
            Endpoints = ListenEndpoint.ParseAll(urls ?? ["http://127.0.0.1:0"]),
            CertificateFile = certificate,
            CertificateKeyFile = key,
            MaxRequestBodyBytes = 1024,
            Tokens = new BearerTokens([Token]),
            WriteUnauthorizedAsync = context => context.Response.WriteAsync("refused\n"),
        }).Build();
        app.UseRequestObserver(observe ?? ((_, _, _) => { }));
        app.UseBearerAuthentication();
        app.MapGet("/v1/secret/{id}", new RequestDelegate(context => context.Response.WriteAsync("secret\n"))).WithDisplayName("secret");
        app.MapPost("/v1/echo", new RequestDelegate(EchoAsync)).WithDisplayName("echo");
        app.MapHealthAndMetrics(context => context.Response.WriteAsync("ok\n"), publicMetrics);
        app.CreateKvFetcherMeter().CreateObservableCounter("kvf.test.metric", () => 7L, "{thing}");
        return app;
    }

    private static async Task EchoAsync(HttpContext context)
    {
        try
        {
            using var body = new MemoryStream();
            await context.Request.Body.CopyToAsync(body, context.RequestAborted);
            await context.Response.WriteAsync($"{body.Length}\n", context.RequestAborted);
        }
        catch (BadHttpRequestException ex)
        {
            context.Response.StatusCode = ex.StatusCode;
        }
    }
}
