using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

namespace KvFetcher.Hosting;

/// <summary>
/// The metrics of KvFetcher's servers: instruments on <see cref="System.Diagnostics.Metrics"/> meters named
/// <see cref="MeterName"/>, exported at <see cref="PublicRoutes.Metrics"/> in the Prometheus text format by OpenTelemetry's
/// Prometheus exporter (<c>OpenTelemetry.Exporter.Prometheus.AspNetCore</c>). Chosen over prometheus-net because it is the
/// exporter the OpenTelemetry project maintains for .NET: it follows the OpenTelemetry-to-Prometheus naming rules (units
/// and <c>_total</c> appended from the instrument's unit and kind), honours the bucket boundaries an instrument advises,
/// is NativeAOT compatible, and the same meters feed any other OpenTelemetry exporter (OTLP) without code here;
/// prometheus-net would add a second metrics model with its own registry beside System.Diagnostics.Metrics.
/// Each app exports only the meters added to its <see cref="MeterScope"/>, so several servers in one process (tests, an
/// application embedding both) never show each other's series.
/// </summary>
public static class KvFetcherMetrics
{
    /// <summary>The name of every KvFetcher meter (the store server's, serve-llm's, the fetcher's and the stores').</summary>
    public const string MeterName = "KvFetcher";

    /// <summary>
    /// Registers the OpenTelemetry meter provider of this app with the Prometheus exporter (no response cache: every
    /// scrape collects), its service name as the resource, and a <see cref="MeterScope"/> that decides which
    /// <see cref="MeterName"/> meters it exports.
    /// </summary>
    public static MeterScope AddKvFetcherMetrics(this WebApplicationBuilder builder, string serviceName)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var scope = new MeterScope();
        builder.Services.AddSingleton(scope);
        builder.Services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService(serviceName))
            .WithMetrics(metrics => metrics
                .AddMeter(MeterName)
                .AddView(instrument => scope.Contains(instrument.Meter) ? null : MetricStreamConfiguration.Drop)
                .AddPrometheusExporter(o =>
                {
                    o.ScrapeResponseCacheDurationMilliseconds = 0;
                    o.ScopeInfoEnabled = false;
                }));
        return scope;
    }

    /// <summary>The app's own <see cref="MeterName"/> meter (from its <see cref="IMeterFactory"/>), added to its <see cref="MeterScope"/>.</summary>
    public static Meter CreateKvFetcherMeter(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        Meter meter = app.Services.GetRequiredService<IMeterFactory>().Create(MeterName);
        app.Services.GetRequiredService<MeterScope>().Add(meter);
        return meter;
    }
}

/// <summary>The meters one app exports (see <see cref="KvFetcherMetrics.AddKvFetcherMetrics"/>).</summary>
public sealed class MeterScope
{
    private readonly ConcurrentDictionary<Meter, byte> _meters = new();

    /// <summary>Exports <paramref name="meter"/>'s instruments; add it before the app starts.</summary>
    public void Add(Meter meter)
    {
        ArgumentNullException.ThrowIfNull(meter);
        _meters.TryAdd(meter, 0);
    }

    public bool Contains(Meter meter) => _meters.ContainsKey(meter);
}
