using System.Globalization;
using KvFetcher.Core.Keys;

namespace KvFetcher.Fetch.Calibration;

/// <summary>
/// The least accuracy a lossy variant must have shown on this model for ours and the server to fetch it: top-1 agreement
/// at least <see cref="MinTop1Agreement"/> and perplexity change at most <see cref="MaxPerplexityChange"/>, as measured by
/// <c>kvfetch calibrate</c> (<see cref="CalibrationProfile"/>). Lossless variants (raw, exact) always pass; a lossy
/// variant passes only with a trusted measurement (a profile whose fingerprint is the model's), so a model never
/// calibrated is served losslessly. <see cref="Lossless"/> allows only lossless variants.
/// </summary>
public sealed record AccuracyFloor
{
    /// <summary>Least share of continuation positions whose top-1 token agrees with the exact KV's (default 0.99).</summary>
    public double MinTop1Agreement { get; init; } = 0.99;

    /// <summary>Most perplexity change of the continuation allowed (default 0.01 = +1%).</summary>
    public double MaxPerplexityChange { get; init; } = 0.01;

    /// <summary>Only lossless variants, whatever was measured.</summary>
    public bool LosslessOnly { get; init; }

    /// <summary>Top-1 agreement &gt;= 99% and perplexity change &lt;= 1%.</summary>
    public static AccuracyFloor Default { get; } = new();

    /// <summary>Only raw and exact: reuse is bit-identical to a full prefill.</summary>
    public static AccuracyFloor Lossless { get; } = new() { LosslessOnly = true };

    /// <summary>
    /// Parses <c>default</c>, <c>lossless</c>, or thresholds <c>top1=0.995,ppl=0.005</c> (either may be left out and
    /// keeps its default; percentages such as <c>top1=99.5%</c> are read too).
    /// </summary>
    public static AccuracyFloor Parse(string text)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(text);
        switch (text.Trim())
        {
            case "default":
                return Default;
            case "lossless":
                return Lossless;
        }

        AccuracyFloor floor = Default;
        foreach (string part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            string[] pair = part.Split('=', 2, StringSplitOptions.TrimEntries);
            double value = pair.Length == 2 ? ParseShare(pair[1]) : double.NaN;
            if (double.IsNaN(value) || value < 0)
            {
                throw new ArgumentException($"Accuracy '{text}': '{part}' is not NAME=VALUE with a non-negative number; expected default, lossless or top1=0.99,ppl=0.01.", nameof(text));
            }

            floor = pair[0] switch
            {
                "top1" when value <= 1 => floor with { MinTop1Agreement = value },
                "ppl" => floor with { MaxPerplexityChange = value },
                _ => throw new ArgumentException($"Accuracy '{text}': unknown or out-of-range threshold '{part}' (top1 in [0, 1], ppl >= 0).", nameof(text)),
            };
        }

        return floor;
    }

    /// <summary>
    /// Which of <paramref name="ladder"/>'s variants this floor lets the model with <paramref name="fingerprint"/> fetch,
    /// given its profile (null when there is none; <paramref name="profileProblem"/> then says why).
    /// </summary>
    public FloorDecision Decide(IReadOnlyList<KvVariant> ladder, CalibrationProfile? profile, ModelFingerprint fingerprint, string? profileProblem = null)
    {
        ArgumentNullException.ThrowIfNull(ladder);
        string status;
        CalibrationProfile? trusted = null;
        if (profile is null)
        {
            status = profileProblem ?? "no calibration profile";
        }
        else if (!profile.Matches(fingerprint))
        {
            status = $"calibration profile is stale (measured on model {Short(profile.ModelFingerprint)}, this model is {Short(fingerprint.ToString())}): lossless only until kvfetch calibrate runs again";
        }
        else
        {
            trusted = profile;
            status = $"calibration profile of {profile.Created:yyyy-MM-dd} matches the model ({profile.Evaluation.Documents.Length} documents, {profile.Evaluation.PrefixTokens}-token prefixes)";
        }

        return new FloorDecision(this, ladder, trusted, status);
    }

    /// <summary>Whether <paramref name="variant"/> passes, and why, with <paramref name="trusted"/> the model's trusted profile (or null).</summary>
    internal (bool Allowed, string Reason) Judge(KvVariant variant, CalibrationProfile? trusted)
    {
        if (variant.IsLossless)
        {
            return (true, "lossless");
        }

        if (LosslessOnly)
        {
            return (false, "lossy, and the floor is lossless");
        }

        if (trusted is null)
        {
            return (false, "lossy and not measured on this model");
        }

        if (trusted.Find(variant) is not { } measured)
        {
            return (false, "lossy and not in the calibration profile");
        }

        string numbers = string.Create(CultureInfo.InvariantCulture, $"top-1 {100 * measured.Top1Agreement:0.0}%, perplexity {100 * measured.PerplexityChange:+0.00;-0.00}%");
        if (measured.Top1Agreement < MinTop1Agreement)
        {
            return (false, string.Create(CultureInfo.InvariantCulture, $"{numbers}: top-1 below {100 * MinTop1Agreement:0.0#}%"));
        }

        if (measured.PerplexityChange > MaxPerplexityChange)
        {
            return (false, string.Create(CultureInfo.InvariantCulture, $"{numbers}: perplexity change above {100 * MaxPerplexityChange:+0.0#}%"));
        }

        return (true, numbers);
    }

    public override string ToString() => LosslessOnly
        ? "lossless (raw and exact only)"
        : string.Create(CultureInfo.InvariantCulture, $"top-1 agreement >= {100 * MinTop1Agreement:0.0#}%, perplexity change <= {100 * MaxPerplexityChange:+0.0#}%");

    private static double ParseShare(string text)
    {
        bool percent = text.EndsWith('%');
        return double.TryParse(percent ? text[..^1] : text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value)
            ? percent ? value / 100 : value
            : double.NaN;
    }

    private static string Short(string hex) => hex.Length > 12 ? hex[..12] : hex;
}

/// <summary>
/// What an <see cref="AccuracyFloor"/> allows for one model: per variant of its ladder, allowed or not and why, and the
/// state of the model's calibration profile. Variants outside the ladder are judged the same way on demand.
/// </summary>
public sealed class FloorDecision
{
    private readonly CalibrationProfile? _trusted;

    internal FloorDecision(AccuracyFloor floor, IReadOnlyList<KvVariant> ladder, CalibrationProfile? trusted, string profileStatus)
    {
        Floor = floor;
        _trusted = trusted;
        ProfileStatus = profileStatus;
        Verdicts = [.. ladder.Select(v => { (bool allowed, string reason) = floor.Judge(v, trusted); return new FloorVerdict(v, allowed, reason); })];
        Allowed = [.. Verdicts.Where(v => v.Allowed).Select(v => v.Variant)];
    }

    public AccuracyFloor Floor { get; }

    /// <summary>Whether a profile matching the model was found (lossy variants can only pass with one).</summary>
    public bool ProfileTrusted => _trusted is not null;

    /// <summary>One line on the profile: missing, stale, unreadable or trusted.</summary>
    public string ProfileStatus { get; }

    /// <summary>The ladder's variants, each with its verdict.</summary>
    public IReadOnlyList<FloorVerdict> Verdicts { get; }

    /// <summary>The ladder's variants that may be fetched, in ladder order.</summary>
    public IReadOnlyList<KvVariant> Allowed { get; }

    /// <summary>Whether <paramref name="variant"/> (in the ladder or not) may be fetched.</summary>
    public bool Allows(KvVariant variant)
    {
        foreach (FloorVerdict verdict in Verdicts)
        {
            if (verdict.Variant == variant)
            {
                return verdict.Allowed;
            }
        }

        return Floor.Judge(variant, _trusted).Allowed;
    }

    /// <summary>The lines to print: the floor and the profile, then one per variant (allowed or refused, and why).</summary>
    public IEnumerable<string> Describe()
    {
        yield return $"accuracy floor: {Floor}; {ProfileStatus}";
        foreach (FloorVerdict verdict in Verdicts)
        {
            yield return $"  {verdict.Variant}: {(verdict.Allowed ? "allowed" : "refused")} ({verdict.Reason})";
        }
    }
}

/// <summary>One variant's verdict under an accuracy floor.</summary>
public sealed record FloorVerdict(KvVariant Variant, bool Allowed, string Reason);
