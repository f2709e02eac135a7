namespace KvFetcher.Engine.Model;

/// <summary>
/// cos and sin of the rotary embedding for positions [0, Positions), [position][headDim/2], computed as Hugging Face
/// does: the angle is the fp32 product position·inv_freq, its cosine is scaled by the rope type's attention factor.
/// Every engine builds its rotary tables from this one definition (the CUDA engine uploads them), so the engines agree
/// on every position.
/// </summary>
public sealed class RotaryTable
{
    private readonly float[] _cos;
    private readonly float[] _sin;
    private readonly int _half;

    /// <summary>Computes the table for positions [0, <paramref name="positions"/>) of <paramref name="rope"/>.</summary>
    public RotaryTable(RopeConfig rope, int headDim, int maxPositionEmbeddings, int positions)
    {
        ArgumentNullException.ThrowIfNull(rope);
        ArgumentOutOfRangeException.ThrowIfLessThan(headDim, 2);
        ArgumentOutOfRangeException.ThrowIfNegative(positions);
        (float[] inverseFrequencies, float attentionScaling) = rope.Compute(headDim, maxPositionEmbeddings, positions);
        _half = headDim / 2;
        Positions = positions;
        _cos = new float[positions * _half];
        _sin = new float[positions * _half];
        for (int p = 0; p < positions; p++)
        {
            for (int i = 0; i < _half; i++)
            {
                float angle = p * inverseFrequencies[i];
                _cos[(p * _half) + i] = (float)Math.Cos(angle) * attentionScaling;
                _sin[(p * _half) + i] = (float)Math.Sin(angle) * attentionScaling;
            }
        }
    }

    /// <summary>The positions the table holds.</summary>
    public int Positions { get; }

    /// <summary>cos of position <paramref name="position"/>'s angles (headDim/2 values), scaled by the attention factor.</summary>
    public ReadOnlySpan<float> Cos(int position) => _cos.AsSpan(position * _half, _half);

    /// <summary>sin of position <paramref name="position"/>'s angles (headDim/2 values), scaled by the attention factor.</summary>
    public ReadOnlySpan<float> Sin(int position) => _sin.AsSpan(position * _half, _half);
}
