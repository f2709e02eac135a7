namespace KvFetcher.Codecs.Transform;

/// <summary>
/// Bit allocation across the PCA components of every plane, greedy on a rate-distortion model: a component of standard
/// deviation sigma coded with b bits (step <c>sigma * 2^(2 - b)</c>, entropy-coded) leaves about
/// <c>sigma^2 * Distortion(b)</c> of error; each next bit goes to the component whose weighted error it reduces most.
/// With a convex model this is the optimum for the budget (reverse water-filling), and the allocations of smaller budgets
/// are prefixes of those of larger ones, so one pass serves every level.
/// </summary>
internal static class KvtcAllocation
{
    /// <summary>The modelled error of a unit-variance component coded with <paramref name="bits"/> bits (0 = dropped).</summary>
    public static double Distortion(int bits) => bits == 0 ? 1.0 : 4.0 / 3.0 * Math.Pow(4, -bits);

    /// <summary>
    /// Allocates bits for every level of <paramref name="levelBits"/> (nominal bits per element, descending) over the
    /// components of <paramref name="sigma"/> (per plane, channels components each), each component's error weighted by
    /// <paramref name="weights"/> (one per component). Returns <c>bits[level][plane * channels + component]</c> flattened level-major.
    /// </summary>
    public static byte[] Allocate(ReadOnlySpan<float> sigma, ReadOnlySpan<double> weights, IReadOnlyList<float> levelBits)
    {
        int count = sigma.Length;
        var bits = new byte[levelBits.Count * count];
        var current = new byte[count];
        var queue = new PriorityQueue<int, double>(count);
        for (int i = 0; i < count; i++)
        {
            double variance = (double)sigma[i] * sigma[i];
            if (variance > 0)
            {
                queue.Enqueue(i, -Gain(variance * weights[i], 0));
            }
        }

        // Budgets in ascending order (the last level has the fewest bits); snapshot each as the greedy passes it.
        long spent = 0;
        for (int level = levelBits.Count - 1; level >= 0; level--)
        {
            long budget = (long)Math.Round(levelBits[level] * (double)count);
            while (spent < budget && queue.TryDequeue(out int i, out _))
            {
                current[i]++;
                spent++;
                if (current[i] < KvtcTransform.MaxBits)
                {
                    double variance = (double)sigma[i] * sigma[i];
                    queue.Enqueue(i, -Gain(variance * weights[i], current[i]));
                }
            }

            current.CopyTo(bits, level * count);
        }

        return bits;
    }

    private static double Gain(double weightedVariance, int bits) => weightedVariance * (Distortion(bits) - Distortion(bits + 1));
}
