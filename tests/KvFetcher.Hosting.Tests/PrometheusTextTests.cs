using System.Text;

namespace KvFetcher.Hosting.Tests;

/// <summary>The Prometheus text exposition both servers write.</summary>
public sealed class PrometheusTextTests
{
    [Fact]
    public void Sample_LongAndDouble_WritesHeaderAndInvariantValue()
    {
        var text = new StringBuilder();

        PrometheusText.Sample(text, "kvf_things_total", "counter", "Things.", 42L);
        PrometheusText.Sample(text, "kvf_ratio", "gauge", "A ratio.", 0.1);

        Assert.Equal("# HELP kvf_things_total Things.\n# TYPE kvf_things_total counter\nkvf_things_total 42\n"
            + "# HELP kvf_ratio A ratio.\n# TYPE kvf_ratio gauge\nkvf_ratio 0.1\n", text.ToString());
    }

    [Fact]
    public void Format_Observations_WritesCumulativeBucketsSumAndCount()
    {
        var histogram = new SecondsHistogram([0.1, 1]);
        histogram.Observe(0.05);
        histogram.Observe(0.1); // on a bound: counted in that bucket
        histogram.Observe(0.5);
        histogram.Observe(3);
        var text = new StringBuilder();

        histogram.Format(text, "kvf_seconds", "route=\"get\"");

        Assert.Equal("kvf_seconds_bucket{route=\"get\",le=\"0.1\"} 2\n"
            + "kvf_seconds_bucket{route=\"get\",le=\"1\"} 3\n"
            + "kvf_seconds_bucket{route=\"get\",le=\"+Inf\"} 4\n"
            + "kvf_seconds_sum{route=\"get\"} 3.65\n"
            + "kvf_seconds_count{route=\"get\"} 4\n", text.ToString());
    }

    [Fact]
    public void Format_NoLabels_WritesBareSumAndCount()
    {
        var histogram = new SecondsHistogram([1]);
        var text = new StringBuilder();

        histogram.Format(text, "kvf_seconds");

        Assert.Equal("kvf_seconds_bucket{le=\"1\"} 0\nkvf_seconds_bucket{le=\"+Inf\"} 0\nkvf_seconds_sum 0\nkvf_seconds_count 0\n", text.ToString());
    }
}
