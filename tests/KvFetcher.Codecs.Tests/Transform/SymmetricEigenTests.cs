using KvFetcher.Codecs.Transform;

namespace KvFetcher.Codecs.Tests.Transform;

public class SymmetricEigenTests
{
    [Fact]
    public void Decompose_RandomCovariance_OrthonormalVectorsThatReconstructIt()
    {
        const int n = 24;
        var random = new Random(7);
        var samples = new double[100 * n];
        for (int i = 0; i < samples.Length; i++)
        {
            samples[i] = (random.NextDouble() - 0.5) * (1 + (i % n));
        }

        var matrix = new double[n * n];
        for (int s = 0; s < 100; s++)
        {
            for (int i = 0; i < n; i++)
            {
                for (int j = 0; j < n; j++)
                {
                    matrix[(i * n) + j] += samples[(s * n) + i] * samples[(s * n) + j];
                }
            }
        }

        double[] original = (double[])matrix.Clone();
        var vectors = new double[n * n];
        double[] values = SymmetricEigen.Decompose(matrix, n, vectors);

        for (int k = 1; k < n; k++)
        {
            Assert.True(values[k - 1] >= values[k]);
        }

        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double dot = 0, reconstructed = 0;
                for (int k = 0; k < n; k++)
                {
                    dot += vectors[(i * n) + k] * vectors[(j * n) + k];
                    reconstructed += vectors[(k * n) + i] * values[k] * vectors[(k * n) + j];
                }

                Assert.Equal(i == j ? 1.0 : 0.0, dot, 1e-9);
                Assert.Equal(original[(i * n) + j], reconstructed, 1e-6 * Math.Abs(values[0]));
            }
        }
    }
}
