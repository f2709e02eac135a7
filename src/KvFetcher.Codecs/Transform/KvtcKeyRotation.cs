using System.Buffers;

namespace KvFetcher.Codecs.Transform;

/// <summary>Which channels of a key head the rotary embedding turns together, as a kvtc transform records it.</summary>
public enum KvtcKeyPairing : byte
{
    /// <summary>No rotation is removed: keys are coded as the cache stores them.</summary>
    None = 0,

    /// <summary>Channels i and i + headDim / 2 form a pair (Hugging Face's <c>rotate_half</c>; the engines of this project).</summary>
    HalfSplit = 1,

    /// <summary>Channels 2i and 2i + 1 form a pair (the RoFormer and original Llama reference layout).</summary>
    Interleaved = 2,
}

/// <summary>
/// The rotary embedding of a model's keys, as much of it as the <c>kvtc</c> codec needs to take it off before the
/// transform and put it back after: the pairing and each pair's inverse frequency. Key pair i of the token at position p
/// is turned by the angle <c>p * inverseFrequency[i]</c>, computed as the engine computes it (the fp32 product, then the
/// cosine and sine in double rounded to fp32); encoder, decoder and fitter all go through <see cref="Angles"/> and
/// <see cref="Rotate(Span{float}, int, ReadOnlySpan{float}, ReadOnlySpan{float}, bool)"/>, so a chunk decodes with exactly the rotation it was coded with. A rope type's attention factor
/// (yarn), which scales every key alike, is left out: removing a pure rotation already makes keys position-independent.
/// </summary>
public sealed class KvtcKeyRotation
{
    private readonly float[] _inverseFrequencies;

    /// <summary>A rotation of <paramref name="pairing"/> with <paramref name="inverseFrequencies"/> (headDim / 2 values, finite and positive; none for <see cref="KvtcKeyPairing.None"/>).</summary>
    public KvtcKeyRotation(KvtcKeyPairing pairing, ReadOnlySpan<float> inverseFrequencies)
    {
        if (!Enum.IsDefined(pairing))
        {
            throw new ArgumentOutOfRangeException(nameof(pairing), pairing, "Not a key pairing.");
        }

        if (pairing == KvtcKeyPairing.None)
        {
            if (!inverseFrequencies.IsEmpty)
            {
                throw new ArgumentException("Keys coded as stored take no inverse frequencies.", nameof(inverseFrequencies));
            }
        }
        else
        {
            ArgumentOutOfRangeException.ThrowIfZero(inverseFrequencies.Length, nameof(inverseFrequencies));
            foreach (float f in inverseFrequencies)
            {
                if (!float.IsFinite(f) || !(f > 0))
                {
                    throw new ArgumentOutOfRangeException(nameof(inverseFrequencies), f, "Inverse frequencies are finite and positive.");
                }
            }
        }

        Pairing = pairing;
        _inverseFrequencies = inverseFrequencies.ToArray();
    }

    /// <summary>Keys coded as the cache stores them.</summary>
    public static KvtcKeyRotation None { get; } = new(KvtcKeyPairing.None, []);

    public KvtcKeyPairing Pairing { get; }

    /// <summary>Whether keys are coded as stored (nothing to take off).</summary>
    public bool IsNone => Pairing == KvtcKeyPairing.None;

    /// <summary>Each pair's inverse frequency (headDim / 2 values; empty for <see cref="KvtcKeyPairing.None"/>).</summary>
    public ReadOnlySpan<float> InverseFrequencies => _inverseFrequencies;

    /// <summary>Whether this rotation is for heads of <paramref name="headDim"/> channels.</summary>
    public bool Fits(int headDim) => IsNone || headDim == 2 * _inverseFrequencies.Length;

    /// <summary>The cosine and sine of every pair's angle at <paramref name="position"/> (headDim / 2 values each).</summary>
    public void Angles(long position, Span<float> cos, Span<float> sin)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(position);
        float p = position; // the engine multiplies in fp32: angle = float(position) * inv_freq
        for (int i = 0; i < _inverseFrequencies.Length; i++)
        {
            float angle = p * _inverseFrequencies[i];
            cos[i] = (float)Math.Cos(angle);
            sin[i] = (float)Math.Sin(angle);
        }
    }

    /// <summary>
    /// Turns every head of <paramref name="row"/> (heads x headDim channels) by the angles of <paramref name="cos"/> and
    /// <paramref name="sin"/> (<see cref="Angles"/>): forwards as the engine applies RoPE, or back with
    /// <paramref name="inverse"/> (to the keys before RoPE).
    /// </summary>
    public void Rotate(Span<float> row, int headDim, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, bool inverse)
    {
        int half = _inverseFrequencies.Length;
        if (half == 0)
        {
            return;
        }

        if (headDim != 2 * half || row.Length % headDim != 0)
        {
            throw new ArgumentException($"kvtc: a key rotation of {half} pairs does not fit a row of {row.Length} channels in heads of {headDim}.", nameof(row));
        }

        // Pair (a, b) at (i, i + half) or (2i, 2i + 1): a' = a cos - b sin, b' = b cos + a sin; back with -sin.
        int stride = Pairing == KvtcKeyPairing.HalfSplit ? 1 : 2;
        int partner = Pairing == KvtcKeyPairing.HalfSplit ? half : 1;
        for (int h = 0; h < row.Length; h += headDim)
        {
            Span<float> head = row.Slice(h, headDim);
            for (int i = 0; i < half; i++)
            {
                int j = i * stride;
                float a = head[j];
                float b = head[j + partner];
                float c = cos[i];
                float s = inverse ? -sin[i] : sin[i];
                head[j] = (a * c) - (b * s);
                head[j + partner] = (b * c) + (a * s);
            }
        }
    }

    /// <summary>
    /// The cosines then the sines of every pair's angle for the <paramref name="tokens"/> positions from
    /// <paramref name="first"/>, token by token (headDim values per token), in a pooled array (<see cref="ReturnAngles"/>);
    /// empty for <see cref="KvtcKeyPairing.None"/>.
    /// </summary>
    internal float[] RentAngles(long first, int tokens)
    {
        int half = _inverseFrequencies.Length;
        if (half == 0 || tokens <= 0)
        {
            return [];
        }

        float[] angles = ArrayPool<float>.Shared.Rent(tokens * 2 * half);
        for (int t = 0; t < tokens; t++)
        {
            Span<float> token = angles.AsSpan(t * 2 * half, 2 * half);
            Angles(first + t, token[..half], token[half..]);
        }

        return angles;
    }

    internal static void ReturnAngles(float[] angles)
    {
        if (angles.Length > 0)
        {
            ArrayPool<float>.Shared.Return(angles);
        }
    }

    /// <summary><see cref="Rotate(Span{float}, int, ReadOnlySpan{float}, ReadOnlySpan{float}, bool)"/> with token <paramref name="token"/>'s angles of <see cref="RentAngles"/>; nothing for <see cref="KvtcKeyPairing.None"/>.</summary>
    internal void RotateToken(Span<float> row, int headDim, float[] angles, int token, bool inverse)
    {
        int half = _inverseFrequencies.Length;
        if (half > 0)
        {
            ReadOnlySpan<float> both = angles.AsSpan(token * 2 * half, 2 * half);
            Rotate(row, headDim, both[..half], both[half..], inverse);
        }
    }
}
