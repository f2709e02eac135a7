using System.Diagnostics.Metrics;
using KvFetcher.Hosting;
using KvFetcher.Serving.Api;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace KvFetcher.Serving;

/// <summary>
/// <c>kvfetch serve-llm</c>: an OpenAI-compatible inference server (Kestrel, HTTP/1.1) over a <see cref="KvFetcherEngine"/>.
/// Several servers sharing one KV store reuse each other's contexts. See <see cref="OpenAiEndpoints"/> for the API.
/// </summary>
public sealed class LlmServer : IAsyncDisposable
{
    private static readonly ApiError s_unauthorized =
        new(StatusCodes.Status401Unauthorized, "Incorrect or missing API key: send 'Authorization: Bearer KEY'.", "invalid_request_error", Code: "invalid_api_key");

    private readonly RunningApp _running;

    private LlmServer(RunningApp running, KvFetcherEngine engine)
    {
        _running = running;
        Engine = engine;
    }

    /// <summary>The bound addresses, ephemeral ports resolved (e.g. <c>http://127.0.0.1:41234/</c>).</summary>
    public IReadOnlyList<Uri> Addresses => _running.Addresses;

    /// <summary>The app's services: the routes it mapped, for tests that walk every one.</summary>
    internal IServiceProvider Services => _running.Services;

    public KvFetcherEngine Engine { get; }

    /// <summary>
    /// Validates <paramref name="options"/>, loads the model, opens the store, binds and starts serving. The engine logs
    /// through the server's logging (configuration-driven, see <see cref="KestrelApp.CreateBuilder(string)"/>) and its
    /// metrics are the server's <c>/metrics</c>.
    /// </summary>
    public static async Task<LlmServer> StartAsync(LlmServerOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        return await StartAsync(options, services => KvFetcherEngine.StartAsync(options.Engine, services.GetRequiredService<ILoggerFactory>(),
            services.GetRequiredService<IMeterFactory>(), cancellationToken), ownsEngine: true, cancellationToken);
    }

    /// <summary>
    /// Serves <paramref name="engine"/>; disposes it with the server when <paramref name="ownsEngine"/>. Its meter's
    /// instruments are exported at <c>/metrics</c> beside the server's own.
    /// </summary>
    public static Task<LlmServer> StartAsync(LlmServerOptions options, KvFetcherEngine engine, bool ownsEngine, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(engine);
        return StartAsync(options, _ => Task.FromResult(engine), ownsEngine, cancellationToken);
    }

    private static async Task<LlmServer> StartAsync(LlmServerOptions options, Func<IServiceProvider, Task<KvFetcherEngine>> createEngine, bool ownsEngine,
        CancellationToken cancellationToken)
    {
        // Deny by default (with API keys or --tenant-from-key): every route needs a key but the public list (/healthz;
        // /metrics with PublicMetrics).
        WebApplicationBuilder builder = KestrelApp.CreateBuilder(new KestrelAppOptions
        {
            ApplicationName = "kvfetch-serve-llm",
            Endpoints = options.ParseEndpoints(),
            CertificateFile = options.CertificateFile,
            CertificateKeyFile = options.CertificateKeyFile,
            CleartextProtocols = HttpProtocols.Http1,
            MaxRequestBodyBytes = options.MaxRequestBodyBytes,
            Tokens = new BearerTokens(options.ApiKeys, required: options.TenantFromKey),
            WriteUnauthorizedAsync = s_unauthorized.WriteAsync,
        });

        WebApplication app = builder.Build();
        KvFetcherEngine engine;
        try
        {
            engine = await createEngine(app.Services);
        }
        catch
        {
            await app.DisposeAsync();
            throw;
        }

        try
        {
            app.Services.GetRequiredService<MeterScope>().Add(engine.Meter);
            var endpointsApi = new OpenAiEndpoints(engine, options);
            ServingMetrics metrics = engine.Metrics;
            app.UseRequestObserver((route, status, _) => metrics.ObserveRequest(route, status));
            app.Use(BadRequestAsync);
            app.UseBearerAuthentication();
            // After authentication: an unknown route or a wrong method is found out only for a caller with a valid key (or
            // on a server without keys); the others get the 401 and learn nothing about the routes.
            app.UseStatusCodePages(context => EmptyErrorAsync(context.HttpContext));
            endpointsApi.Map(app);
            // Requests in flight get 10 s to finish when the server is disposed.
            return new LlmServer(await KestrelApp.StartAsync(app, ownsEngine ? engine : null, TimeSpan.FromSeconds(10), cancellationToken), engine);
        }
        catch
        {
            if (ownsEngine)
            {
                await engine.DisposeAsync();
            }

            throw;
        }
    }

    /// <summary>Stops accepting connections and waits for requests in flight (cancel to cut them short).</summary>
    public Task StopAsync(CancellationToken cancellationToken = default) => _running.StopAsync(cancellationToken);

    /// <summary>Stops (requests in flight get 10 s), then disposes the engine if owned.</summary>
    public ValueTask DisposeAsync() => _running.DisposeAsync();

    /// <summary>
    /// An error status that nothing wrote a body for (no route matched: 404; a route with another method: 405, with
    /// its <c>Allow</c> header) gets one in the API's error format, worded as OpenAI words it.
    /// </summary>
    internal static Task EmptyErrorAsync(HttpContext context)
    {
        HttpRequest request = context.Request;
        string path = request.Path.Value is { Length: > 200 } longPath ? longPath[..200] + "..." : request.Path.Value ?? "/";
        string allowed = context.Response.Headers.Allow.ToString();
        ApiError error = context.Response.StatusCode switch
        {
            StatusCodes.Status404NotFound => new ApiError(StatusCodes.Status404NotFound,
                $"Invalid URL ({request.Method} {path}): this server serves POST /v1/completions, POST /v1/chat/completions and GET /v1/models.", Code: "unknown_url"),
            StatusCodes.Status405MethodNotAllowed => new ApiError(StatusCodes.Status405MethodNotAllowed,
                $"Method {request.Method} is not allowed on {path}; use {(allowed.Length > 0 ? allowed : "another method")}.", Code: "method_not_allowed"),
            int status => new ApiError(status, $"The request failed with HTTP status {status}.", status >= 500 ? "server_error" : "invalid_request_error"),
        };
        return error.WriteAsync(context);
    }

    /// <summary>A body over the limit or a malformed request becomes a 4xx in the API's error format.</summary>
    private static async Task BadRequestAsync(HttpContext context, RequestDelegate next)
    {
        try
        {
            await next(context);
        }
        catch (Microsoft.AspNetCore.Http.BadHttpRequestException ex)
        {
            await new ApiError(ex.StatusCode, ex.Message).WriteAsync(context);
        }
    }
}
