namespace KvFetcher.Codecs.Transform;

/// <summary>
/// Eigendecomposition of a real symmetric matrix by the cyclic Jacobi method: plane rotations zero the off-diagonal
/// entries one at a time until their sum of squares is negligible. O(n^3) per sweep, a handful of sweeps; accurate
/// eigenvectors (orthonormal to rounding) even for clustered eigenvalues, which is what a PCA basis needs.
/// </summary>
internal static class SymmetricEigen
{
    private const int MaxSweeps = 60;

    /// <summary>
    /// Decomposes the symmetric <paramref name="n"/> x <paramref name="n"/> matrix <paramref name="matrix"/> (row-major;
    /// overwritten). Returns the eigenvalues in descending order and the eigenvectors as the rows of
    /// <paramref name="vectors"/> (row k belongs to eigenvalue k).
    /// </summary>
    public static double[] Decompose(double[] matrix, int n, double[] vectors)
    {
        ArgumentNullException.ThrowIfNull(matrix);
        ArgumentNullException.ThrowIfNull(vectors);
        ArgumentOutOfRangeException.ThrowIfNotEqual(matrix.Length, n * n, nameof(matrix));
        ArgumentOutOfRangeException.ThrowIfNotEqual(vectors.Length, n * n, nameof(vectors));

        // v holds the eigenvectors as columns while rotating (v = product of the rotations).
        var v = new double[n * n];
        for (int i = 0; i < n; i++)
        {
            v[(i * n) + i] = 1;
        }

        double[] a = matrix;
        double scale = 0;
        for (int i = 0; i < n * n; i++)
        {
            scale += a[i] * a[i];
        }

        double tolerance = Math.Max(scale, double.Epsilon) * 1e-30;
        for (int sweep = 0; sweep < MaxSweeps; sweep++)
        {
            double off = 0;
            for (int p = 0; p < n; p++)
            {
                for (int q = p + 1; q < n; q++)
                {
                    off += a[(p * n) + q] * a[(p * n) + q];
                }
            }

            if (off <= tolerance)
            {
                break;
            }

            for (int p = 0; p < n - 1; p++)
            {
                for (int q = p + 1; q < n; q++)
                {
                    double apq = a[(p * n) + q];
                    if (apq == 0)
                    {
                        continue;
                    }

                    double app = a[(p * n) + p];
                    double aqq = a[(q * n) + q];
                    double theta = (aqq - app) / (2 * apq);
                    double t = Math.Sign(theta == 0 ? 1 : theta) / (Math.Abs(theta) + Math.Sqrt((theta * theta) + 1));
                    double c = 1 / Math.Sqrt((t * t) + 1);
                    double s = t * c;
                    Rotate(a, v, n, p, q, c, s);
                }
            }
        }

        // Sort by eigenvalue, descending; copy the columns of v as rows.
        var values = new double[n];
        for (int i = 0; i < n; i++)
        {
            values[i] = a[(i * n) + i];
        }

        int[] order = [.. Enumerable.Range(0, n).OrderByDescending(i => values[i])];
        var sorted = new double[n];
        for (int k = 0; k < n; k++)
        {
            sorted[k] = values[order[k]];
            for (int j = 0; j < n; j++)
            {
                vectors[(k * n) + j] = v[(j * n) + order[k]];
            }
        }

        return sorted;
    }

    /// <summary>A := J^T A J and V := V J for the rotation J in plane (p, q) with cosine c and sine s.</summary>
    private static void Rotate(double[] a, double[] v, int n, int p, int q, double c, double s)
    {
        for (int k = 0; k < n; k++)
        {
            double akp = a[(k * n) + p];
            double akq = a[(k * n) + q];
            a[(k * n) + p] = (c * akp) - (s * akq);
            a[(k * n) + q] = (s * akp) + (c * akq);
        }

        for (int k = 0; k < n; k++)
        {
            double apk = a[(p * n) + k];
            double aqk = a[(q * n) + k];
            a[(p * n) + k] = (c * apk) - (s * aqk);
            a[(q * n) + k] = (s * apk) + (c * aqk);
        }

        for (int k = 0; k < n; k++)
        {
            double vkp = v[(k * n) + p];
            double vkq = v[(k * n) + q];
            v[(k * n) + p] = (c * vkp) - (s * vkq);
            v[(k * n) + q] = (s * vkp) + (c * vkq);
        }
    }
}
