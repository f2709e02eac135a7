using System.Numerics.Tensors;
using KvFetcher.Engine.Cpu;

namespace KvFetcher.Engine.Generation;

/// <summary>Chooses the next token from logits: greedy, or temperature with top-p. Allocates only at construction.</summary>
public sealed class Sampler
{
    private readonly SamplingOptions _options;
    private readonly Random _random;
    private readonly float[] _probabilities;
    private readonly int[] _indices;

    public Sampler(SamplingOptions options, int vocabSize)
    {
        options.Validate();
        _options = options;
        _random = options.Seed is int seed ? new Random(seed) : new Random();
        _probabilities = new float[vocabSize];
        _indices = new int[vocabSize];
    }

    /// <summary>Picks a token id from <paramref name="logits"/> (left unchanged).</summary>
    public int Next(ReadOnlySpan<float> logits)
    {
        if (_options.Temperature == 0)
        {
            return Kernels.ArgMax(logits);
        }

        Span<float> p = _probabilities.AsSpan(0, logits.Length);
        TensorPrimitives.Divide(logits, _options.Temperature, p);
        TensorPrimitives.SoftMax(p, p);
        float draw = (float)_random.NextDouble();
        if (_options.TopP >= 1f)
        {
            return Draw(p, draw, p.Length, sorted: false);
        }

        // Sort probabilities descending with their ids, keep the nucleus, renormalise by its mass.
        Span<int> ids = _indices.AsSpan(0, logits.Length);
        for (int i = 0; i < ids.Length; i++)
        {
            ids[i] = i;
            p[i] = -p[i];
        }

        p.Sort(ids);
        float mass = 0f;
        int keep = 0;
        while (keep < p.Length)
        {
            mass += -p[keep];
            keep++;
            if (mass >= _options.TopP)
            {
                break;
            }
        }

        for (int i = 0; i < keep; i++)
        {
            p[i] = -p[i];
        }

        return Draw(p, draw * mass, keep, sorted: true);
    }

    private int Draw(ReadOnlySpan<float> p, float draw, int count, bool sorted)
    {
        float cumulative = 0f;
        for (int i = 0; i < count; i++)
        {
            cumulative += p[i];
            if (draw < cumulative)
            {
                return sorted ? _indices[i] : i;
            }
        }

        // Rounding left the draw past the last cumulative value: take the last kept token.
        return sorted ? _indices[count - 1] : count - 1;
    }
}
