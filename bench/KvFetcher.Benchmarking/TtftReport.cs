using System.Globalization;
using System.Text;

namespace KvFetcher.Benchmarking;

/// <summary>The TTFT sweep as a markdown table with ratios, and as PNG plots (ScottPlot).</summary>
public static class TtftReport
{
    /// <summary>The sweep as a markdown table: TTFT per strategy, the lower bound, and ours against both.</summary>
    public static string Markdown(TtftSweepResult result)
    {
        var text = new StringBuilder();
        TtftPoint[] shaped = [.. result.Points.Where(p => !p.Link.StartsWith("jitter", StringComparison.Ordinal))];
        string[] strategies = [.. shaped.Select(p => p.Strategy).Distinct()];
        text.Append(CultureInfo.InvariantCulture, $"TTFT in ms ({result.Machine}); bound = DESIGN.md's lower bound from rates measured in the same run.\n\n");
        text.Append("| link | context | Mbit/s | ").AppendJoin(" | ", strategies).Append(" | bound | ours / bound | ours / best other | ours picked |\n");
        text.Append("| --- | ---: | ---: |").Append(string.Concat(Enumerable.Repeat(" ---: |", strategies.Length + 3))).Append(" --- |\n");
        var versusCompute = new List<double>();
        var versusRaw = new List<double>();
        double worstBound = 0, worstOther = 0;
        foreach (var group in shaped.GroupBy(p => (p.Link, p.Context, p.Mbps)))
        {
            Dictionary<string, TtftPoint> row = group.ToDictionary(p => p.Strategy);
            TtftBound? bound = result.Bounds.FirstOrDefault(b => b.Context == group.Key.Context && b.Mbps == group.Key.Mbps);
            text.Append(CultureInfo.InvariantCulture, $"| {group.Key.Link} | {group.Key.Context} | {group.Key.Mbps:G} |");
            foreach (string s in strategies)
            {
                text.Append(CultureInfo.InvariantCulture, $" {(row.TryGetValue(s, out TtftPoint? p) ? p.TtftMs.ToString("F0", CultureInfo.InvariantCulture) : "-")} |");
            }

            if (row.TryGetValue("ours", out TtftPoint? ours))
            {
                double best = row.Values.Where(p => p.Strategy != "ours").Select(p => p.TtftMs).DefaultIfEmpty(double.NaN).Min();
                double toBound = bound is null ? double.NaN : ours.TtftMs / bound.BoundMs;
                double toBest = ours.TtftMs / best;
                worstBound = Math.Max(worstBound, toBound);
                worstOther = Math.Max(worstOther, toBest);
                if (row.TryGetValue("compute", out TtftPoint? compute))
                {
                    versusCompute.Add(compute.TtftMs / ours.TtftMs);
                }

                if (row.TryGetValue("fetch-raw", out TtftPoint? raw))
                {
                    versusRaw.Add(raw.TtftMs / ours.TtftMs);
                }

                text.Append(CultureInfo.InvariantCulture, $" {bound?.BoundMs:F0} | {toBound:F2} | {toBest:F2} | {(ours.Variants.Length == 0 ? "-" : ours.Variants)} |\n");
            }
            else
            {
                text.Append(CultureInfo.InvariantCulture, $" {bound?.BoundMs:F0} | - | - | - |\n");
            }
        }

        text.Append('\n');
        if (versusCompute.Count > 0)
        {
            text.Append(CultureInfo.InvariantCulture, $"Ours vs compute-only: {Speedup(versusCompute.Average())} on average (min {versusCompute.Min():F2}x). ");
        }

        if (versusRaw.Count > 0)
        {
            text.Append(CultureInfo.InvariantCulture, $"Ours vs raw fetch: {versusRaw.Average():F2}x on average (min {versusRaw.Min():F2}x). ");
        }

        text.Append(CultureInfo.InvariantCulture, $"Worst ours / bound: {worstBound:F2}. Worst ours / best other: {worstOther:F2}.\n");
        TtftPoint[] jitter = [.. result.Points.Where(p => p.Link.StartsWith("jitter", StringComparison.Ordinal))];
        if (jitter.Length > 0)
        {
            text.Append(CultureInfo.InvariantCulture, $"\nJitter ({jitter[0].Link}, mean {jitter[0].Mbps:F0} Mbit/s, context {jitter[0].Context}):\n\n| pipeline | TTFT ms | chunks restored | variants |\n| --- | ---: | ---: | --- |\n");
            foreach (TtftPoint p in jitter)
            {
                text.Append(CultureInfo.InvariantCulture, $"| {p.Strategy} | {p.TtftMs:F0} | {p.Restored} | {p.Variants} |\n");
            }

            double ours = jitter.First(p => p.Strategy == "ours").TtftMs;
            TtftPoint bestFixed = jitter.Where(p => p.Strategy != "ours").MinBy(p => p.TtftMs)!;
            text.Append(CultureInfo.InvariantCulture, $"\nAdaptive vs the best fixed level ({bestFixed.Strategy}): {Versus(ours, bestFixed.TtftMs)}.\n");
        }

        return text.ToString();
    }

    /// <summary>
    /// How a TTFT of <paramref name="ours"/> compares with <paramref name="other"/>, the right way round:
    /// "x% lower TTFT" only when it is lower, "x% higher TTFT (slower)" when higher, "the same TTFT" when equal to 0.1%.
    /// </summary>
    public static string Versus(double ours, double other)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(other);
        double change = ((ours / other) - 1) * 100;
        return Math.Round(change, 1) switch
        {
            < 0 => string.Create(CultureInfo.InvariantCulture, $"{-change:F1}% lower TTFT"),
            > 0 => string.Create(CultureInfo.InvariantCulture, $"{change:F1}% higher TTFT (slower)"),
            _ => "the same TTFT",
        };
    }

    /// <summary>A speed ratio (other's time / ours) in words: "2.50x faster", or "1.25x slower" when below 1.</summary>
    public static string Speedup(double ratio)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(ratio);
        return ratio >= 1
            ? string.Create(CultureInfo.InvariantCulture, $"{ratio:F2}x faster")
            : string.Create(CultureInfo.InvariantCulture, $"{1 / ratio:F2}x slower");
    }

    /// <summary>
    /// Writes one PNG plot of TTFT vs bandwidth per stored context into <paramref name="folder"/>: both axes logarithmic
    /// (bandwidth ticks read 10, 100, 1000 Mbit/s; TTFT ticks 1-2-5 per decade in ms, so the sub-second region where the
    /// strategies differ is as legible as the slow end, and nothing can go below zero), the lower bound as a dashed line
    /// without markers, and the legend beside the plot rather than over the lines.
    /// </summary>
    public static void Plots(TtftSweepResult result, string folder)
    {
        foreach (var context in result.Points.Where(p => p.Link == "shaper").GroupBy(p => p.Context))
        {
            TtftBound[] bounds = [.. result.Bounds.Where(b => b.Context == context.Key).OrderBy(b => b.Mbps)];
            double[] rates = [.. context.Select(p => p.Mbps), .. bounds.Select(b => b.Mbps)];
            double[] times = [.. context.Select(p => p.TtftMs), .. bounds.Select(b => b.BoundMs)];
            using var plot = new ScottPlot.Plot();
            foreach (var strategy in context.GroupBy(p => p.Strategy))
            {
                TtftPoint[] points = [.. strategy.OrderBy(p => p.Mbps)];
                var line = plot.Add.Scatter(points.Select(p => Log(p.Mbps)).ToArray(), points.Select(p => Log(p.TtftMs)).ToArray());
                line.LegendText = strategy.Key;
                line.LineWidth = strategy.Key == "ours" ? 3 : 1.5f;
                line.MarkerSize = strategy.Key == "ours" ? 8 : 5;
            }

            if (bounds.Length > 0)
            {
                var boundLine = plot.Add.Scatter(bounds.Select(b => Log(b.Mbps)).ToArray(), bounds.Select(b => Log(b.BoundMs)).ToArray());
                boundLine.LegendText = "lower bound";
                boundLine.LinePattern = ScottPlot.LinePattern.Dashed;
                boundLine.LineWidth = 2;
                boundLine.MarkerSize = 0;
                boundLine.Color = ScottPlot.Colors.Black;
            }

            plot.Axes.Bottom.TickGenerator = LogTicks(rates.Min(), rates.Max(), oneTwoFive: false);
            plot.Axes.Left.TickGenerator = LogTicks(times.Min(), times.Max(), oneTwoFive: true);
            plot.Axes.SetLimits(Log(rates.Min()) - 0.08, Log(rates.Max()) + 0.08, Log(times.Min()) - 0.08, Log(times.Max()) + 0.08);
            plot.Title($"TTFT vs bandwidth, {context.Key}-token stored context\n{result.Machine}", size: 16);
            plot.XLabel("link bandwidth, Mbit/s (log scale)");
            plot.YLabel("time to first token, ms (log scale)");
            plot.ShowLegend(ScottPlot.Edge.Right);
            plot.SavePng(Path.Combine(folder, $"ttft-{context.Key}.png"), 1000, 600);
        }
    }

    /// <summary>log10, with values at or below zero (never measured, but a plot must not fail) drawn at 0.01.</summary>
    private static double Log(double value) => Math.Log10(Math.Max(value, 0.01));

    /// <summary>Ticks for a log10 axis: labelled at each decade (and at 2 and 5 of each with <paramref name="oneTwoFive"/>), minor ticks at the other integers.</summary>
    private static ScottPlot.TickGenerators.NumericManual LogTicks(double min, double max, bool oneTwoFive)
    {
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        int first = (int)Math.Floor(Log(min));
        int last = (int)Math.Ceiling(Log(max));
        for (int decade = first; decade <= last; decade++)
        {
            for (int step = 1; step <= 9; step++)
            {
                double value = step * Math.Pow(10, decade);
                if (step == 1 || (oneTwoFive && step is 2 or 5))
                {
                    ticks.AddMajor(Math.Log10(value), value.ToString("0.###", CultureInfo.InvariantCulture));
                }
                else
                {
                    ticks.AddMinor(Math.Log10(value));
                }
            }
        }

        return ticks;
    }
}
