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

    /// <summary>The content type of the Prometheus text exposition format, version 0.0.4.</summary>
    public const string MetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

    /// <summary>The paths anonymous callers may reach: <see cref="Health"/>, and <see cref="Metrics"/> when <paramref name="publicMetrics"/>.</summary>
    public static IReadOnlyList<string> Paths(bool publicMetrics) => publicMetrics ? [Health, Metrics] : [Health];

    /// <summary>
    /// Maps <c>GET /healthz</c> to <paramref name="health"/> (display name <c>healthz</c>, public) and <c>GET /metrics</c>
    /// (display name <c>metrics</c>, public only with <paramref name="publicMetrics"/>) to the text
    /// <paramref name="formatMetrics"/> returns, served as <see cref="MetricsContentType"/>.
    /// </summary>
    public static void MapHealthAndMetrics(this IEndpointRouteBuilder app, RequestDelegate health, Func<CancellationToken, Task<string>> formatMetrics, bool publicMetrics)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(health);
        ArgumentNullException.ThrowIfNull(formatMetrics);
        app.MapGet(Health, health).WithDisplayName("healthz").WithMetadata(PublicRoute.Instance).AllowAnonymous();
        IEndpointConventionBuilder metrics = app.MapGet(Metrics, new RequestDelegate(async context =>
        {
            string text = await formatMetrics(context.RequestAborted).ConfigureAwait(false);
            context.Response.ContentType = MetricsContentType;
            await context.Response.WriteAsync(text, context.RequestAborted).ConfigureAwait(false);
        })).WithDisplayName("metrics");
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
