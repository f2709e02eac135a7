namespace KvFetcher.Store.Telemetry;

/// <summary>The meter every KvFetcher library records on (the servers export it; <c>KvFetcher.Hosting.KvFetcherMetrics.MeterName</c> is the same name).</summary>
public static class KvFetcherMeter
{
    public const string Name = "KvFetcher";
}
