using System.Text.Json;
using System.Text.Json.Serialization;
using KvFetcher.Core.Keys;

namespace KvFetcher.Fetch.Calibration;

/// <summary>One variant's measurements in a <see cref="CalibrationProfile"/> (see <see cref="VariantAccuracy"/>).</summary>
public sealed record ProfiledVariant(string Variant, double RatioVsFp16, double Top1Agreement, double PerplexityChange, double GreedyMatch,
    double EncodeMBps, double DecodeMBps)
{
    public static ProfiledVariant From(VariantAccuracy accuracy)
    {
        ArgumentNullException.ThrowIfNull(accuracy);
        return new(accuracy.Variant.ToString(), accuracy.RatioVsFp16, accuracy.Top1Agreement, accuracy.PerplexityChange, accuracy.GreedyMatch,
            accuracy.EncodeMBps, accuracy.DecodeMBps);
    }
}

/// <summary>How a profile's accuracy was measured (see <see cref="AccuracyEvaluationOptions"/>).</summary>
public sealed record ProfileEvaluation(string[] Documents, int PrefixTokens, int ContinuationTokens, int GreedyTokens, int ChunkTokens, string KvDType);

/// <summary>
/// What <c>kvfetch calibrate</c> measured for one model: every codec variant's compression ratio, accuracy (top-1
/// agreement and perplexity change of a continuation after a restored prefix, see <see cref="AccuracyEvaluator"/>) and
/// rates. Lives next to the model as <c>kvfetcher-profile.json</c> and is trusted only while the model's fingerprint
/// (<see cref="ModelFingerprint"/>, the one chunk keys use) is the one recorded: a changed checkpoint makes it stale.
/// </summary>
public sealed record CalibrationProfile
{
    /// <summary>The profile's file name in a model directory.</summary>
    public const string FileName = "kvfetcher-profile.json";

    /// <summary>The format version this build writes and reads.</summary>
    public const int CurrentFormat = 1;

    public int Format { get; init; } = CurrentFormat;

    /// <summary>The fingerprint of the model measured (hex).</summary>
    public required string ModelFingerprint { get; init; }

    /// <summary>The model directory's name when measured, for people.</summary>
    public string Model { get; init; } = "";

    public DateTimeOffset Created { get; init; }

    public required ProfileEvaluation Evaluation { get; init; }

    public required ProfiledVariant[] Variants { get; init; }

    /// <summary>The profile's path in <paramref name="modelDirectory"/>.</summary>
    public static string PathIn(string modelDirectory) => Path.Combine(modelDirectory, FileName);

    /// <summary>Whether this profile was measured on the model with <paramref name="fingerprint"/>.</summary>
    public bool Matches(ModelFingerprint fingerprint) => string.Equals(ModelFingerprint, fingerprint.ToString(), StringComparison.OrdinalIgnoreCase);

    /// <summary>The measurements of <paramref name="variant"/>, or null when it was not measured.</summary>
    public ProfiledVariant? Find(KvVariant variant)
    {
        string name = variant.ToString();
        return Variants.FirstOrDefault(v => v.Variant == name);
    }

    /// <summary>Writes the profile to <paramref name="path"/> atomically (a temporary file, then a rename).</summary>
    public void Save(string path)
    {
        string temporary = path + ".tmp";
        File.WriteAllText(temporary, JsonSerializer.Serialize(this, CalibrationJson.Default.CalibrationProfile));
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>Reads the profile at <paramref name="path"/>; a file that is not a profile of this format throws <see cref="InvalidDataException"/>.</summary>
    public static CalibrationProfile Load(string path)
    {
        CalibrationProfile? profile;
        try
        {
            profile = JsonSerializer.Deserialize(File.ReadAllText(path), CalibrationJson.Default.CalibrationProfile);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path} is not a calibration profile: {ex.Message}", ex);
        }

        if (profile is null || profile.Format != CurrentFormat || profile.Variants is null || profile.Evaluation is null)
        {
            throw new InvalidDataException($"{path} is not a calibration profile of format {CurrentFormat} (format {profile?.Format}).");
        }

        foreach (ProfiledVariant v in profile.Variants)
        {
            if (v.Variant is null || !double.IsFinite(v.Top1Agreement) || !double.IsFinite(v.PerplexityChange))
            {
                throw new InvalidDataException($"{path}: variant '{v.Variant}' has no finite accuracy (top-1 {v.Top1Agreement}, perplexity change {v.PerplexityChange}).");
            }
        }

        return profile;
    }

    /// <summary>
    /// The profile next to <paramref name="modelDirectory"/> if there is one and it can be read; otherwise null and
    /// <paramref name="problem"/> says why (missing, unreadable).
    /// </summary>
    public static CalibrationProfile? TryLoadFrom(string modelDirectory, out string? problem)
    {
        string path = PathIn(modelDirectory);
        if (!File.Exists(path))
        {
            problem = $"no calibration profile ({path} is missing; run kvfetch calibrate --model {modelDirectory})";
            return null;
        }

        try
        {
            problem = null;
            return Load(path);
        }
        catch (Exception ex) when (ex is InvalidDataException or IOException or UnauthorizedAccessException)
        {
            problem = $"calibration profile unusable ({ex.Message})";
            return null;
        }
    }
}

/// <summary>Source-generated JSON of <see cref="CalibrationProfile"/>, snake_case.</summary>
[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(CalibrationProfile))]
internal sealed partial class CalibrationJson : JsonSerializerContext;
