using System.Diagnostics;
using System.Globalization;

namespace KvFetcher.Tests;

/// <summary>
/// A Prometheus text exposition read back for tests: samples by name and exact label set (the exporter's own
/// <c>otel_scope_*</c> labels aside), the <c># TYPE</c> of each metric, and <c>promtool check metrics</c> on the text.
/// </summary>
public sealed class MetricsScrape
{
    private readonly List<(string Name, Dictionary<string, string> Labels, double Value)> _samples = [];
    private readonly Dictionary<string, string> _types = new(StringComparer.Ordinal);

    private MetricsScrape(string text) => Text = text;

    public string Text { get; }

    public static MetricsScrape Parse(string text)
    {
        var scrape = new MetricsScrape(text);
        foreach (string raw in text.Split('\n'))
        {
            string line = raw.TrimEnd('\r');
            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                string[] parts = line.Split(' ');
                scrape._types[parts[2]] = parts[3];
                continue;
            }

            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }

            int brace = line.IndexOf('{', StringComparison.Ordinal);
            int space = line.IndexOf(' ', StringComparison.Ordinal);
            string name;
            var labels = new Dictionary<string, string>(StringComparer.Ordinal);
            string rest;
            if (brace >= 0 && brace < space)
            {
                name = line[..brace];
                int close = line.LastIndexOf('}');
                ParseLabels(line[(brace + 1)..close], labels);
                rest = line[(close + 1)..].Trim();
            }
            else
            {
                name = line[..space];
                rest = line[(space + 1)..].Trim();
            }

            string value = rest.Split(' ')[0];
            scrape._samples.Add((name, labels, value switch
            {
                "+Inf" => double.PositiveInfinity,
                "-Inf" => double.NegativeInfinity,
                "NaN" => double.NaN,
                _ => double.Parse(value, CultureInfo.InvariantCulture),
            }));
        }

        return scrape;
    }

    /// <summary>The value of the sample <paramref name="name"/> with exactly <paramref name="labels"/> (<c>"key=value"</c>), or null.</summary>
    public double? Value(string name, params string[] labels)
    {
        var wanted = labels.Select(l => l.Split('=', 2)).ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);
        foreach ((string Name, Dictionary<string, string> Labels, double Value) sample in _samples)
        {
            if (sample.Name == name && Same(sample.Labels, wanted))
            {
                return sample.Value;
            }
        }

        return null;
    }

    /// <summary>The sum of every sample <paramref name="name"/> whose labels include <paramref name="labels"/> (0 when none).</summary>
    public double Sum(string name, params string[] labels)
    {
        var wanted = labels.Select(l => l.Split('=', 2)).ToList();
        return _samples.Where(s => s.Name == name && wanted.All(w => s.Labels.TryGetValue(w[0], out string? v) && v == w[1])).Sum(s => s.Value);
    }

    /// <summary>Every label set of <paramref name="name"/>'s samples, as <c>key=value</c> strings.</summary>
    public IEnumerable<IReadOnlyDictionary<string, string>> LabelsOf(string name) => _samples.Where(s => s.Name == name).Select(s => (IReadOnlyDictionary<string, string>)s.Labels);

    /// <summary>The <c># TYPE</c> of <paramref name="name"/> (counter, gauge, histogram), or null.</summary>
    public string? TypeOf(string name) => _types.GetValueOrDefault(name);

    /// <summary>Every metric name that has a <c># TYPE</c> line.</summary>
    public IEnumerable<string> Names => _types.Keys;

    /// <summary>
    /// Runs <c>promtool check metrics</c> (from <c>$PROMTOOL</c> or the PATH) on the text: null when promtool is not
    /// installed, else its exit code and output.
    /// </summary>
    public async Task<(int ExitCode, string Output)?> PromtoolCheckAsync(CancellationToken cancellationToken)
    {
        string? promtool = Environment.GetEnvironmentVariable("PROMTOOL") is { Length: > 0 } set ? set
            : (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => Path.Combine(d, "promtool")).FirstOrDefault(File.Exists);
        if (promtool is null || !File.Exists(promtool))
        {
            return null;
        }

        var start = new ProcessStartInfo(promtool, ["check", "metrics"])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using Process process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        Task<string> stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        await process.StandardInput.WriteAsync(Text.AsMemory(), cancellationToken);
        process.StandardInput.Close();
        await process.WaitForExitAsync(cancellationToken);
        return (process.ExitCode, (await stdout) + (await stderr));
    }

    private static bool Same(Dictionary<string, string> labels, Dictionary<string, string> wanted)
    {
        int own = labels.Keys.Count(k => !k.StartsWith("otel_scope_", StringComparison.Ordinal));
        return own == wanted.Count && wanted.All(w => labels.TryGetValue(w.Key, out string? v) && v == w.Value);
    }

    private static void ParseLabels(string text, Dictionary<string, string> labels)
    {
        int i = 0;
        while (i < text.Length)
        {
            int eq = text.IndexOf('=', i);
            if (eq < 0)
            {
                return;
            }

            string key = text[i..eq].Trim(' ', ',');
            int j = eq + 2; // past ="
            var value = new System.Text.StringBuilder();
            while (j < text.Length && text[j] != '"')
            {
                if (text[j] == '\\' && j + 1 < text.Length)
                {
                    j++;
                    value.Append(text[j] == 'n' ? '\n' : text[j]);
                }
                else
                {
                    value.Append(text[j]);
                }

                j++;
            }

            labels[key] = value.ToString();
            i = j + 1;
        }
    }
}
