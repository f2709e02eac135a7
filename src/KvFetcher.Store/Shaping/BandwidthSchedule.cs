using System.Globalization;
using System.Text;

namespace KvFetcher.Store.Shaping;

/// <summary>One step of a <see cref="BandwidthSchedule"/>: a rate held for a duration.</summary>
public readonly record struct BandwidthStep(TimeSpan Duration, double BytesPerSecond);

/// <summary>
/// A link's rate over time: a constant, or steps repeated forever (e.g. 1 Gbit/s and 200 Mbit/s alternating every
/// 500 ms, to emulate jitter). Time is measured from when the schedule starts being used. Immutable.
/// </summary>
public sealed class BandwidthSchedule
{
    private readonly BandwidthStep[] _steps;
    private readonly double _periodSeconds;
    private readonly double _bytesPerPeriod;

    private BandwidthSchedule(BandwidthStep[] steps)
    {
        _steps = steps;
        _periodSeconds = steps.Sum(s => s.Duration.TotalSeconds);
        _bytesPerPeriod = steps.Sum(s => s.Duration.TotalSeconds * s.BytesPerSecond);
        MaxBytesPerSecond = steps.Max(s => s.BytesPerSecond);
    }

    /// <summary>The steps of one period (a constant schedule has one).</summary>
    public IReadOnlyList<BandwidthStep> Steps => _steps;

    /// <summary>The highest rate of any step.</summary>
    public double MaxBytesPerSecond { get; }

    /// <summary>Average rate over one period.</summary>
    public double MeanBytesPerSecond => _bytesPerPeriod / _periodSeconds;

    public static BandwidthSchedule Constant(double bytesPerSecond) => Repeating([new BandwidthStep(TimeSpan.FromHours(1), bytesPerSecond)]);

    /// <summary>Two rates alternating, each held for <paramref name="every"/>, starting with <paramref name="first"/>.</summary>
    public static BandwidthSchedule Alternating(double first, double second, TimeSpan every) =>
        Repeating([new BandwidthStep(every, first), new BandwidthStep(every, second)]);

    /// <summary><paramref name="steps"/> in order, repeated. Rates may be 0 (an outage) but not all of them.</summary>
    public static BandwidthSchedule Repeating(IEnumerable<BandwidthStep> steps)
    {
        ArgumentNullException.ThrowIfNull(steps);
        BandwidthStep[] list = [.. steps];
        if (list.Length == 0)
        {
            throw new ArgumentException("A bandwidth schedule needs at least one step.", nameof(steps));
        }

        foreach (BandwidthStep step in list)
        {
            if (step.Duration <= TimeSpan.Zero)
            {
                throw new ArgumentException($"Every step needs a positive duration; got {step.Duration}.", nameof(steps));
            }

            if (!double.IsFinite(step.BytesPerSecond) || step.BytesPerSecond < 0)
            {
                throw new ArgumentException($"Every rate must be finite and not negative; got {step.BytesPerSecond} B/s.", nameof(steps));
            }
        }

        if (list.All(s => s.BytesPerSecond == 0))
        {
            throw new ArgumentException("A bandwidth schedule needs at least one step with a positive rate.", nameof(steps));
        }

        return new BandwidthSchedule(list);
    }

    /// <summary>
    /// Parses <c>RATE</c> or <c>RATE@DURATION,RATE@DURATION,…</c> (repeated), e.g. <c>10Gbps</c> or
    /// <c>1Gbps@500ms,200Mbps@500ms</c>. Rates: <c>bps Kbps Mbps Gbps</c> (bits) or <c>B/s KB/s MB/s GB/s</c> (bytes),
    /// decimal prefixes. Durations: <c>ms</c> or <c>s</c>.
    /// </summary>
    public static BandwidthSchedule Parse(string text)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(text);
        string[] parts = text.Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length == 1 && !parts[0].Contains('@', StringComparison.Ordinal))
        {
            return Constant(ParseRate(parts[0]));
        }

        var steps = new List<BandwidthStep>(parts.Length);
        foreach (string part in parts)
        {
            int at = part.IndexOf('@', StringComparison.Ordinal);
            if (at < 0)
            {
                throw new FormatException($"Bandwidth step '{part}' needs RATE@DURATION (e.g. 1Gbps@500ms).");
            }

            steps.Add(new BandwidthStep(ParseDuration(part[(at + 1)..]), ParseRate(part[..at])));
        }

        return Repeating(steps);
    }

    /// <summary>The rate at <paramref name="elapsed"/> since the schedule started.</summary>
    public double RateAt(TimeSpan elapsed)
    {
        double t = PositionInPeriod(elapsed.TotalSeconds);
        foreach (BandwidthStep step in _steps)
        {
            double d = step.Duration.TotalSeconds;
            if (t < d)
            {
                return step.BytesPerSecond;
            }

            t -= d;
        }

        return _steps[^1].BytesPerSecond;
    }

    /// <summary>The bytes the link carries between two times (the integral of the rate).</summary>
    public double BytesBetween(TimeSpan from, TimeSpan to) => to <= from ? 0 : BytesUntil(to.TotalSeconds) - BytesUntil(from.TotalSeconds);

    /// <summary>How long after <paramref name="from"/> the link has carried <paramref name="bytes"/> more.</summary>
    public TimeSpan TimeToCarry(TimeSpan from, double bytes)
    {
        if (bytes <= 0)
        {
            return TimeSpan.Zero;
        }

        double start = from.TotalSeconds;
        double target = BytesUntil(start) + bytes;
        double periods = Math.Floor(target / _bytesPerPeriod);
        double rest = target - (periods * _bytesPerPeriod);
        double t = periods * _periodSeconds;
        foreach (BandwidthStep step in _steps)
        {
            double d = step.Duration.TotalSeconds;
            double carried = d * step.BytesPerSecond;
            if (rest <= carried && step.BytesPerSecond > 0)
            {
                t += rest / step.BytesPerSecond;
                break;
            }

            rest -= carried;
            t += d;
        }

        // Round up to whole ticks so that waiting this long earns the bytes (ignoring floating-point noise far below a tick).
        return TimeSpan.FromTicks((long)Math.Ceiling((Math.Max(0, t - start) * TimeSpan.TicksPerSecond) - 1e-4));
    }

    public override string ToString()
    {
        if (_steps.Length == 1)
        {
            return FormatRate(_steps[0].BytesPerSecond);
        }

        var text = new StringBuilder();
        foreach (BandwidthStep step in _steps)
        {
            text.Append(text.Length == 0 ? "" : ",").Append(FormatRate(step.BytesPerSecond))
                .Append(CultureInfo.InvariantCulture, $"@{step.Duration.TotalMilliseconds:0.###}ms");
        }

        return text.ToString();
    }

    private double PositionInPeriod(double seconds) => seconds <= 0 ? 0 : seconds - (Math.Floor(seconds / _periodSeconds) * _periodSeconds);

    /// <summary>Bytes carried from time 0 to <paramref name="seconds"/>.</summary>
    private double BytesUntil(double seconds)
    {
        if (seconds <= 0)
        {
            return 0;
        }

        double periods = Math.Floor(seconds / _periodSeconds);
        double t = seconds - (periods * _periodSeconds);
        double bytes = periods * _bytesPerPeriod;
        foreach (BandwidthStep step in _steps)
        {
            double d = Math.Min(t, step.Duration.TotalSeconds);
            bytes += d * step.BytesPerSecond;
            t -= d;
            if (t <= 0)
            {
                break;
            }
        }

        return bytes;
    }

    private static string FormatRate(double bytesPerSecond)
    {
        double bits = bytesPerSecond * 8;
        return bits switch
        {
            >= 1e9 => string.Create(CultureInfo.InvariantCulture, $"{bits / 1e9:0.###}Gbps"),
            >= 1e6 => string.Create(CultureInfo.InvariantCulture, $"{bits / 1e6:0.###}Mbps"),
            >= 1e3 => string.Create(CultureInfo.InvariantCulture, $"{bits / 1e3:0.###}Kbps"),
            _ => string.Create(CultureInfo.InvariantCulture, $"{bits:0.###}bps"),
        };
    }

    private static double ParseRate(string text)
    {
        (string Suffix, double BytesPerUnit)[] units =
        [
            ("Gbps", 1e9 / 8), ("Mbps", 1e6 / 8), ("Kbps", 1e3 / 8), ("bps", 1.0 / 8),
            ("GB/s", 1e9), ("MB/s", 1e6), ("KB/s", 1e3), ("B/s", 1),
        ];
        foreach ((string suffix, double scale) in units)
        {
            if (text.EndsWith(suffix, StringComparison.OrdinalIgnoreCase)
                && double.TryParse(text.AsSpan(0, text.Length - suffix.Length), NumberStyles.Float, CultureInfo.InvariantCulture, out double value)
                && double.IsFinite(value) && value >= 0)
            {
                return value * scale;
            }
        }

        throw new FormatException($"Bandwidth '{text}' is not a rate such as 10Gbps, 500Mbps or 100MB/s.");
    }

    private static TimeSpan ParseDuration(string text)
    {
        (string Suffix, double Seconds)[] units = [("ms", 1e-3), ("s", 1)];
        foreach ((string suffix, double scale) in units)
        {
            if (text.EndsWith(suffix, StringComparison.OrdinalIgnoreCase)
                && double.TryParse(text.AsSpan(0, text.Length - suffix.Length), NumberStyles.Float, CultureInfo.InvariantCulture, out double value)
                && double.IsFinite(value) && value > 0)
            {
                return TimeSpan.FromSeconds(value * scale);
            }
        }

        throw new FormatException($"Duration '{text}' is not a time such as 500ms or 2s.");
    }
}
