using System.Text.Json;

namespace KvFetcher.Engine.Model;

/// <summary>
/// Rotary position embedding parameters, read from <c>config.json</c> in either layout: the older top-level
/// <c>rope_theta</c> + <c>rope_scaling</c>, or the <c>rope_parameters</c> object that transformers 5 writes.
/// <see cref="Compute"/> reproduces the inverse frequencies of Hugging Face transformers' <c>ROPE_INIT_FUNCTIONS</c>
/// in the same float32 operation order.
/// </summary>
public sealed record RopeConfig
{
    /// <summary>The RoPE types <see cref="Compute"/> implements.</summary>
    public static IReadOnlyList<string> SupportedTypes { get; } = ["default", "linear", "dynamic", "llama3", "yarn"];

    /// <summary>The base (<c>rope_theta</c>).</summary>
    public double Theta { get; init; } = 10_000.0;

    /// <summary>One of <see cref="SupportedTypes"/>.</summary>
    public string Type { get; init; } = "default";

    /// <summary>The scaling factor (linear, dynamic, llama3, yarn); 1 for default.</summary>
    public double Factor { get; init; } = 1.0;

    /// <summary>llama3: <c>low_freq_factor</c>.</summary>
    public double LowFreqFactor { get; init; } = 1.0;

    /// <summary>llama3: <c>high_freq_factor</c>.</summary>
    public double HighFreqFactor { get; init; } = 4.0;

    /// <summary>llama3 and yarn: the pre-training context length; <see langword="null"/> means max_position_embeddings.</summary>
    public int? OriginalMaxPositionEmbeddings { get; init; }

    /// <summary>yarn: an explicit <c>attention_factor</c> (otherwise derived from the factor and mscale values).</summary>
    public double? AttentionFactor { get; init; }

    /// <summary>yarn: <c>beta_fast</c> (32 when unset or zero).</summary>
    public double? BetaFast { get; init; }

    /// <summary>yarn: <c>beta_slow</c> (1 when unset or zero).</summary>
    public double? BetaSlow { get; init; }

    /// <summary>yarn: <c>mscale</c>.</summary>
    public double? Mscale { get; init; }

    /// <summary>yarn: <c>mscale_all_dim</c>.</summary>
    public double? MscaleAllDim { get; init; }

    /// <summary>yarn: whether the correction range is rounded to whole dimensions (<c>truncate</c>, default true).</summary>
    public bool Truncate { get; init; } = true;

    /// <summary>
    /// The inverse frequencies (<paramref name="headDim"/> / 2 values) and the factor by which cos/sin are scaled.
    /// <paramref name="sequenceLength"/> matters only for <c>dynamic</c>, whose base grows once the sequence is
    /// longer than <paramref name="maxPositionEmbeddings"/> (as transformers recomputes it in the forward pass).
    /// </summary>
    public (float[] InverseFrequencies, float AttentionScaling) Compute(int headDim, int maxPositionEmbeddings, int sequenceLength)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(headDim, 2);
        if (headDim % 2 != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "RoPE needs an even head dimension.");
        }

        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxPositionEmbeddings);
        ArgumentOutOfRangeException.ThrowIfNegative(sequenceLength);

        switch (Type)
        {
            case "default":
                return (DefaultInverseFrequencies(headDim, (float)Theta), 1f);

            case "linear":
            {
                float[] inv = DefaultInverseFrequencies(headDim, (float)Theta);
                float factor = (float)Factor;
                for (int i = 0; i < inv.Length; i++)
                {
                    inv[i] /= factor;
                }

                return (inv, 1f);
            }

            case "dynamic":
                return (DynamicInverseFrequencies(headDim, maxPositionEmbeddings, sequenceLength), 1f);

            case "llama3":
                return (Llama3InverseFrequencies(headDim, maxPositionEmbeddings), 1f);

            case "yarn":
                return YarnInverseFrequencies(headDim, maxPositionEmbeddings);

            default:
                throw new NotSupportedException(
                    $"RoPE type '{Type}' is not supported (supported: {string.Join(", ", SupportedTypes)}).");
        }
    }

    // inv_freq = 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in float32: the exponent is a float32
    // division, the power takes a float32 base, and "1.0 / t" is t.reciprocal().
    private static float[] DefaultInverseFrequencies(int dim, float theta)
    {
        float[] inv = new float[dim / 2];
        for (int i = 0; i < inv.Length; i++)
        {
            inv[i] = 1f / PowF(theta, (float)(2 * i) / dim);
        }

        return inv;
    }

    private float[] DynamicInverseFrequencies(int dim, int maxPositions, int sequenceLength)
    {
        float theta;
        if (sequenceLength > maxPositions)
        {
            // In the forward pass seq_len is an int64 tensor, so the new base is a float32 tensor; only the power,
            // a one-element tensor raised to a Python float, is evaluated in double by torch's scalar path.
            float scaled = (float)Factor * sequenceLength;
            scaled /= maxPositions;
            scaled -= (float)(Factor - 1);
            theta = (float)Theta * (float)Math.Pow(scaled, (double)dim / (dim - 2));
        }
        else
        {
            // At initialisation seq_len = max_position_embeddings and the base is computed in Python floats.
            double ratio = (Factor * maxPositions / maxPositions) - (Factor - 1);
            theta = (float)(Theta * Math.Pow(ratio, (double)dim / (dim - 2)));
        }

        return DefaultInverseFrequencies(dim, theta);
    }

    private float[] Llama3InverseFrequencies(int dim, int maxPositions)
    {
        float[] inv = DefaultInverseFrequencies(dim, (float)Theta);
        double oldContext = OriginalMaxPositionEmbeddings ?? maxPositions;
        float lowFreqWavelength = (float)(oldContext / LowFreqFactor);
        float highFreqWavelength = (float)(oldContext / HighFreqFactor);
        float twoPi = (float)(2 * Math.PI);
        float factor = (float)Factor;
        float lowFreqFactor = (float)LowFreqFactor;
        float smoothRange = (float)(HighFreqFactor - LowFreqFactor);
        float oldContextF = (float)oldContext;

        for (int i = 0; i < inv.Length; i++)
        {
            float wavelength = (1f / inv[i]) * twoPi;
            float scaled = wavelength > lowFreqWavelength ? inv[i] / factor : inv[i];
            bool medium = !(wavelength < highFreqWavelength) && !(wavelength > lowFreqWavelength);
            if (medium)
            {
                float smooth = (((1f / wavelength) * oldContextF) - lowFreqFactor) / smoothRange;
                scaled = ((1f - smooth) * scaled / factor) + (smooth * scaled);
            }

            inv[i] = scaled;
        }

        return inv;
    }

    private (float[] InverseFrequencies, float AttentionScaling) YarnInverseFrequencies(int dim, int maxPositions)
    {
        double factor = Factor;
        double originalMax = OriginalMaxPositionEmbeddings ?? maxPositions;

        double attentionFactor;
        if (AttentionFactor is double explicitFactor)
        {
            attentionFactor = explicitFactor;
        }
        else if (Mscale is double mscale && mscale != 0 && MscaleAllDim is double mscaleAllDim && mscaleAllDim != 0)
        {
            attentionFactor = YarnMscale(factor, mscale) / YarnMscale(factor, mscaleAllDim);
        }
        else
        {
            attentionFactor = YarnMscale(factor, 1);
        }

        double betaFast = BetaFast is double fast && fast != 0 ? fast : 32;
        double betaSlow = BetaSlow is double slow && slow != 0 ? slow : 1;

        double low = CorrectionDimension(betaFast, dim, Theta, originalMax);
        double high = CorrectionDimension(betaSlow, dim, Theta, originalMax);
        if (Truncate)
        {
            low = Math.Floor(low);
            high = Math.Ceiling(high);
        }

        low = Math.Max(low, 0);
        high = Math.Min(high, dim - 1);
        if (low == high)
        {
            high += 0.001; // as transformers does, to avoid a zero-width ramp
        }

        float lowF = (float)low;
        float rangeF = (float)(high - low);
        float factorF = (float)factor;
        float theta = (float)Theta;
        float[] inv = new float[dim / 2];
        for (int i = 0; i < inv.Length; i++)
        {
            float position = PowF(theta, (float)(2 * i) / dim);
            float extrapolation = 1f / position;
            float interpolation = 1f / (factorF * position);
            float ramp = Math.Clamp((i - lowF) / rangeF, 0f, 1f);
            float extrapolationFactor = 1f - ramp;
            inv[i] = (interpolation * (1f - extrapolationFactor)) + (extrapolation * extrapolationFactor);
        }

        return (inv, (float)attentionFactor);
    }

    private static double YarnMscale(double scale, double mscale) => scale <= 1 ? 1.0 : (0.1 * mscale * Math.Log(scale)) + 1.0;

    private static double CorrectionDimension(double rotations, int dim, double theta, double maxPositions) =>
        dim * Math.Log(maxPositions / (rotations * 2 * Math.PI)) / (2 * Math.Log(theta));

    private static float PowF(float x, float y) => (float)Math.Pow(x, y);

    /// <summary>Reads the RoPE settings of a <c>config.json</c> root object.</summary>
    internal static RopeConfig Read(JsonElement root, string path, int maxPositionEmbeddings)
    {
        JsonElement parameters = default;
        string prefix = "rope_scaling";
        bool hasParameters = false;
        foreach (string key in (ReadOnlySpan<string>)["rope_scaling", "rope_parameters"])
        {
            if (JsonFields.TryGet(root, key, out JsonElement candidate))
            {
                if (candidate.ValueKind != JsonValueKind.Object)
                {
                    throw new InvalidModelException(path, $"field '{key}' is {JsonFields.Describe(candidate)}, not an object.");
                }

                // transformers: rope_parameters = rope_scaling or rope_parameters (an empty dict counts as absent).
                if (!hasParameters && candidate.EnumerateObject().Any())
                {
                    parameters = candidate;
                    prefix = key;
                    hasParameters = true;
                }
            }
        }

        string Field(string name) => $"{prefix}.{name}";

        double theta = (hasParameters ? JsonFields.Double(parameters, "rope_theta", path, Field("rope_theta")) : null)
            ?? JsonFields.Double(root, "rope_theta", path, "rope_theta")
            ?? 10_000.0;
        if (theta <= 0)
        {
            throw new InvalidModelException(path, $"field 'rope_theta' is {theta}, not a positive number.");
        }

        if (!hasParameters)
        {
            return new RopeConfig { Theta = theta };
        }

        string type = JsonFields.String(parameters, "rope_type", path, Field("rope_type"))
            ?? JsonFields.String(parameters, "type", path, Field("type"))
            ?? "default";
        if (!SupportedTypes.Contains(type))
        {
            throw new InvalidModelException(
                path, $"field '{Field("rope_type")}' is '{type}', which is not supported (supported: {string.Join(", ", SupportedTypes)}).");
        }

        double? partial = JsonFields.Double(parameters, "partial_rotary_factor", path, Field("partial_rotary_factor"))
            ?? JsonFields.Double(root, "partial_rotary_factor", path, "partial_rotary_factor");
        if (partial is double p && p != 1.0)
        {
            throw new InvalidModelException(path, $"field 'partial_rotary_factor' is {p}; only 1.0 (rotate the whole head) is supported.");
        }

        if (type == "default")
        {
            return new RopeConfig { Theta = theta };
        }

        // A top-level original_max_position_embeddings takes priority, as in transformers' standardize_rope_params.
        int? originalMax = JsonFields.Int(root, "original_max_position_embeddings", path, "original_max_position_embeddings")
            ?? JsonFields.Int(parameters, "original_max_position_embeddings", path, Field("original_max_position_embeddings"));
        if (originalMax is <= 0)
        {
            throw new InvalidModelException(path, $"field 'original_max_position_embeddings' is {originalMax}, not a positive integer.");
        }

        double? factor = JsonFields.Double(parameters, "factor", path, Field("factor"));
        if (factor is null)
        {
            if (type != "yarn")
            {
                throw JsonFields.Missing(path, Field("factor"));
            }

            factor = (double)maxPositionEmbeddings / (originalMax ?? maxPositionEmbeddings);
        }

        if (factor <= 0)
        {
            throw new InvalidModelException(path, $"field '{Field("factor")}' is {factor}, not a positive number.");
        }

        var config = new RopeConfig { Theta = theta, Type = type, Factor = factor.Value };
        switch (type)
        {
            case "llama3":
            {
                double low = JsonFields.Double(parameters, "low_freq_factor", path, Field("low_freq_factor"))
                    ?? throw JsonFields.Missing(path, Field("low_freq_factor"));
                double high = JsonFields.Double(parameters, "high_freq_factor", path, Field("high_freq_factor"))
                    ?? throw JsonFields.Missing(path, Field("high_freq_factor"));
                if (!(high > low) || low <= 0)
                {
                    throw new InvalidModelException(
                        path, $"fields '{Field("low_freq_factor")}' ({low}) and '{Field("high_freq_factor")}' ({high}) must satisfy 0 < low < high.");
                }

                return config with { LowFreqFactor = low, HighFreqFactor = high, OriginalMaxPositionEmbeddings = originalMax };
            }

            case "yarn":
                return config with
                {
                    OriginalMaxPositionEmbeddings = originalMax,
                    AttentionFactor = JsonFields.Double(parameters, "attention_factor", path, Field("attention_factor")),
                    BetaFast = JsonFields.Double(parameters, "beta_fast", path, Field("beta_fast")),
                    BetaSlow = JsonFields.Double(parameters, "beta_slow", path, Field("beta_slow")),
                    Mscale = JsonFields.Double(parameters, "mscale", path, Field("mscale")),
                    MscaleAllDim = JsonFields.Double(parameters, "mscale_all_dim", path, Field("mscale_all_dim")),
                    Truncate = JsonFields.Bool(parameters, "truncate", path, Field("truncate")) ?? true,
                };

            default:
                return config;
        }
    }
}
