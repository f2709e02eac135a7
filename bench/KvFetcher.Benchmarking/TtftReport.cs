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
            text.Append(CultureInfo.InvariantCulture, $"Ours vs compute-only: {versusCompute.Average():F2}x faster on average (min {versusCompute.Min():F2}x). ");
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
            text.Append(CultureInfo.InvariantCulture, $"\nAdaptive vs the best fixed level ({bestFixed.Strategy}): {(1 - (ours / bestFixed.TtftMs)) * 100:F1}% lower TTFT.\n");
        }

        return text.ToString();
    }

    /// <summary>Writes one PNG plot of TTFT vs bandwidth per stored context into <paramref name="folder"/>.</summary>
    public static void Plots(TtftSweepResult result, string folder)
    {
        foreach (var context in result.Points.Where(p => p.Link == "shaper").GroupBy(p => p.Context))
        {
            var plot = new ScottPlot.Plot();
            foreach (var strategy in context.GroupBy(p => p.Strategy))
            {
                TtftPoint[] points = [.. strategy.OrderBy(p => p.Mbps)];
                var line = plot.Add.Scatter(points.Select(p => Math.Log10(p.Mbps)).ToArray(), points.Select(p => p.TtftMs).ToArray());
                line.LegendText = strategy.Key;
                line.LineWidth = strategy.Key == "ours" ? 3 : 1.5f;
            }

            TtftBound[] bounds = [.. result.Bounds.Where(b => b.Context == context.Key).OrderBy(b => b.Mbps)];
            var boundLine = plot.Add.Scatter(bounds.Select(b => Math.Log10(b.Mbps)).ToArray(), bounds.Select(b => b.BoundMs).ToArray());
            boundLine.LegendText = "lower bound";
            boundLine.LinePattern = ScottPlot.LinePattern.Dashed;
            boundLine.Color = ScottPlot.Colors.Black;
            plot.Title($"TTFT vs bandwidth, {context.Key}-token stored context (kvf-pydoc-16m, CPU)");
            plot.XLabel("bandwidth, Mbit/s (log10)");
            plot.YLabel("TTFT, ms");
            plot.ShowLegend(ScottPlot.Alignment.UpperRight);
            plot.SavePng(Path.Combine(folder, $"ttft-{context.Key}.png"), 900, 560);
        }
    }
}
