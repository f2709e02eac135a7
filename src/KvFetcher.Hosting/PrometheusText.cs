using System.Globalization;
using System.Text;

namespace KvFetcher.Hosting;

/// <summary>The Prometheus text exposition format (version 0.0.4): metric headers, samples and histograms.</summary>
public static class PrometheusText
{
    /// <summary>Writes the <c># HELP</c> and <c># TYPE</c> lines of <paramref name="name"/>.</summary>
    public static void Header(StringBuilder text, string name, string type, string help)
    {
        ArgumentNullException.ThrowIfNull(text);
        text.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} {type}\n");
    }

    /// <summary>A metric with one unlabelled sample.</summary>
    public static void Sample(StringBuilder text, string name, string type, string help, long value)
    {
        Header(text, name, type, help);
        text.Append(CultureInfo.InvariantCulture, $"{name} {value}\n");
    }

    /// <summary>A metric with one unlabelled sample, written round-trippably.</summary>
    public static void Sample(StringBuilder text, string name, string type, string help, double value)
    {
        Header(text, name, type, help);
        text.Append(CultureInfo.InvariantCulture, $"{name} {value.ToString("R", CultureInfo.InvariantCulture)}\n");
    }
}

/// <summary>A lock-free cumulative histogram of durations in seconds, over fixed bucket bounds.</summary>
public sealed class SecondsHistogram
{
    private readonly double[] _bounds;
    private readonly long[] _buckets;
    private long _sumTicks;

    /// <param name="bounds">Ascending upper bounds of the buckets (<c>+Inf</c> is added).</param>
    public SecondsHistogram(double[] bounds)
    {
        ArgumentNullException.ThrowIfNull(bounds);
        _bounds = bounds;
        _buckets = new long[bounds.Length + 1];
    }

    public void Observe(double seconds)
    {
        int bucket = 0;
        while (bucket < _bounds.Length && seconds > _bounds[bucket])
        {
            bucket++;
        }

        Interlocked.Increment(ref _buckets[bucket]);
        Interlocked.Add(ref _sumTicks, (long)(seconds * TimeSpan.TicksPerSecond));
    }

    /// <summary>
    /// Writes the <c>_bucket</c>, <c>_sum</c> and <c>_count</c> samples of <paramref name="name"/> (no header), with
    /// <paramref name="labels"/> (e.g. <c>route="get"</c>, or empty) on each.
    /// </summary>
    public void Format(StringBuilder text, string name, string labels = "")
    {
        ArgumentNullException.ThrowIfNull(text);
        string prefix = labels.Length == 0 ? "" : labels + ",";
        string only = labels.Length == 0 ? "" : $"{{{labels}}}";
        long cumulative = 0;
        for (int i = 0; i < _buckets.Length; i++)
        {
            cumulative += Interlocked.Read(ref _buckets[i]);
            string le = i < _bounds.Length ? _bounds[i].ToString(CultureInfo.InvariantCulture) : "+Inf";
            text.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{{prefix}le=\"{le}\"}} {cumulative}\n");
        }

        double sum = Interlocked.Read(ref _sumTicks) / (double)TimeSpan.TicksPerSecond;
        text.Append(CultureInfo.InvariantCulture, $"{name}_sum{only} {sum.ToString("R", CultureInfo.InvariantCulture)}\n");
        text.Append(CultureInfo.InvariantCulture, $"{name}_count{only} {cumulative}\n");
    }
}
