using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace KvFetcher.Hosting;

/// <summary>
/// The explicit list of routes that anonymous callers may reach on KvFetcher's servers, and the two operational routes
/// both servers map: <c>GET /healthz</c> (always public) and <c>GET /metrics</c> in the Prometheus text format (public
/// only when asked, e.g. for a scraper without a token). Every other route needs the bearer token
/// (<see cref="BearerAuthentication"/>'s fallback policy); <see cref="KestrelApp.StartAsync"/> refuses to start an app in
/// which any other route allows anonymous callers.
/// </summary>
public static class PublicRoutes
{
    /// <summary>The health check's path.</summary>
    public const string Health = "/healthz";

    /// <summary>The Prometheus exposition's path.</summary>
    public const string Metrics = "/metrics";

    /// <summary>The content type of the Prometheus text exposition format, version 0.0.4, as the exporter sends it.</summary>
    public const string MetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

    /// <summary>The paths anonymous callers may reach: <see cref="Health"/>, and <see cref="Metrics"/> when <paramref name="publicMetrics"/>.</summary>
    public static IReadOnlyList<string> Paths(bool publicMetrics) => publicMetrics ? [Health, Metrics] : [Health];

    /// <summary>
    /// Maps <c>GET /healthz</c> to <paramref name="health"/> (display name <c>healthz</c>, public) and <c>GET /metrics</c>
    /// to the app's Prometheus exporter (display name <c>metrics</c>, public only with <paramref name="publicMetrics"/>;
    /// see <see cref="KvFetcherMetrics.AddKvFetcherMetrics"/>). <paramref name="beforeScrape"/>, when given, runs before
    /// each collection (e.g. to read a store's statistics that observable instruments then report).
    /// </summary>
    public static void MapHealthAndMetrics(this IEndpointRouteBuilder app, RequestDelegate health, bool publicMetrics, Func<CancellationToken, Task>? beforeScrape = null)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(health);
        app.MapGet(Health, health).WithDisplayName("healthz").WithMetadata(PublicRoute.Instance).AllowAnonymous();
        IEndpointConventionBuilder metrics = app.MapPrometheusScrapingEndpoint(Metrics, meterProvider: null, configureBranchedPipeline: beforeScrape is null ? null : branch =>
            branch.Use(async (context, next) =>
            {
                await beforeScrape(context.RequestAborted).ConfigureAwait(false);
                await next(context).ConfigureAwait(false);
            }), optionsName: null).WithDisplayName("metrics");
        if (publicMetrics)
        {
            metrics.WithMetadata(PublicRoute.Instance).AllowAnonymous();
        }
    }

    /// <summary>Throws <see cref="InvalidOperationException"/> naming a route that allows anonymous callers without being on the public list.</summary>
    internal static void CheckAnonymousRoutes(IEndpointRouteBuilder app)
    {
        foreach (Endpoint endpoint in app.DataSources.SelectMany(source => source.Endpoints))
        {
            if (endpoint.Metadata.GetMetadata<IAllowAnonymous>() is not null && endpoint.Metadata.GetMetadata<PublicRoute>() is null)
            {
                string route = (endpoint as RouteEndpoint)?.RoutePattern.RawText ?? endpoint.DisplayName ?? "?";
                throw new InvalidOperationException($"The route '{route}' allows anonymous callers but is not on the public list ({Health}, {Metrics}).");
            }
        }
    }

    /// <summary>Marks the endpoints mapped here; only they may carry <see cref="IAllowAnonymous"/>.</summary>
    private sealed class PublicRoute
    {
        public static readonly PublicRoute Instance = new();
    }
}
