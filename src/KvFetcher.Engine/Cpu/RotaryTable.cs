using KvFetcher.Engine.Model;

namespace KvFetcher.Engine.Cpu;

/// <summary>
/// cos and sin of the rotary embedding for positions [0, Positions), [position][headDim/2], computed as Hugging Face
/// does: the angle is the fp32 product position·inv_freq, its cosine is scaled by the rope type's attention factor.
/// </summary>
internal sealed class RotaryTable
{
    private readonly float[] _cos;
    private readonly float[] _sin;
    private readonly int _half;

    public RotaryTable(RopeConfig rope, int headDim, int maxPositionEmbeddings, int positions)
    {
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

    public int Positions { get; }

    public ReadOnlySpan<float> Cos(int position) => _cos.AsSpan(position * _half, _half);

    public ReadOnlySpan<float> Sin(int position) => _sin.AsSpan(position * _half, _half);
}
