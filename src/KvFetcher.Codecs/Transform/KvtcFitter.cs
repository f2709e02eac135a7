using System.Buffers;
using System.Numerics.Tensors;
using KvFetcher.Core;
using KvFetcher.Core.Keys;
using KvFetcher.Core.Numerics;

namespace KvFetcher.Codecs.Transform;

/// <summary>
/// Fits a <see cref="KvtcTransform"/> to sample KV of one model: <see cref="Add"/> accumulates each block's (keys or values
/// of a group of neighbouring layers, channels concatenated) means and covariance (in double) over chunks of real KV,
/// keys with the model's rotary embedding taken off (as the codec codes them), leaving out the tokens the codec keeps
/// exact (attention sinks would dominate the covariance); <see cref="Build"/> takes the principal axes of each block's
/// covariance in the metric of what an error costs (each layer's plane weighted by the model's measured sensitivity to
/// it over the plane's total variance, and for keys read through the layer's query metric; without a measurement every
/// layer, K and V, keeps the same share of its signal), then allocates bits across all blocks' components by their
/// variance in that metric (<see cref="KvtcAllocation"/>).
/// </summary>
public sealed class KvtcFitter
{
    /// <summary>Neighbouring layers a transform spans by default (fewer when the model has fewer, or when their channels together pass <see cref="KvtcTransform.MaxChannels"/>).</summary>
    public const int DefaultGroupLayers = 4;

    private readonly int _layers, _kvHeads, _headDim, _groupLayers, _exactHead, _exactTail;
    private readonly KvtcKeyRotation _keyRotation;
    private readonly double[][] _sum;
    private readonly double[][] _outer;
    private long _samples;

    /// <param name="layers">The model's layers.</param>
    /// <param name="kvHeads">Its KV heads.</param>
    /// <param name="headDim">Its head dimension.</param>
    /// <param name="keyRotation">Its keys' rotary embedding, taken off before the fit and by the codec (<see cref="KvtcKeyRotation.None"/>: keys as stored).</param>
    /// <param name="exactHead">Tokens at the start of each chunk the codec keeps exact (4: the attention sinks).</param>
    /// <param name="exactTail">Tokens at the end of each chunk kept exact.</param>
    /// <param name="groupLayers">Neighbouring layers transformed together (at most the layers, and as many as fit <see cref="KvtcTransform.MaxChannels"/>).</param>
    public KvtcFitter(int layers, int kvHeads, int headDim, KvtcKeyRotation keyRotation, int exactHead = 4, int exactTail = 0, int groupLayers = DefaultGroupLayers)
    {
        ArgumentNullException.ThrowIfNull(keyRotation);
        ArgumentOutOfRangeException.ThrowIfLessThan(layers, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(layers, ushort.MaxValue);
        ArgumentOutOfRangeException.ThrowIfLessThan(kvHeads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(headDim, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(kvHeads * headDim, KvtcTransform.MaxChannels, nameof(kvHeads));
        ArgumentOutOfRangeException.ThrowIfNegative(exactHead);
        ArgumentOutOfRangeException.ThrowIfNegative(exactTail);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(exactHead, ushort.MaxValue);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(exactTail, ushort.MaxValue);
        ArgumentOutOfRangeException.ThrowIfLessThan(groupLayers, 1);
        if (!keyRotation.Fits(headDim))
        {
            throw new ArgumentException($"kvtc fitter: a key rotation of {keyRotation.InverseFrequencies.Length} pairs does not fit heads of {headDim} channels.", nameof(keyRotation));
        }

        _keyRotation = keyRotation;
        _layers = layers;
        _kvHeads = kvHeads;
        _headDim = headDim;
        _exactHead = exactHead;
        _exactTail = exactTail;
        int c = kvHeads * headDim;
        _groupLayers = Math.Min(Math.Min(groupLayers, layers), KvtcTransform.MaxChannels / c);
        int blocks = BlockCount;
        _sum = new double[blocks][];
        _outer = new double[blocks][];
        for (int b = 0; b < blocks; b++)
        {
            int d = BlockLayers(b) * c;
            _sum[b] = new double[d];
            _outer[b] = new double[d * d];
        }
    }

    /// <summary>Tokens at the start of each chunk the codec keeps exact (left out of the fit).</summary>
    public int ExactHead => _exactHead;

    /// <summary>Neighbouring layers transformed together.</summary>
    public int GroupLayers => _groupLayers;

    /// <summary>Tokens accumulated so far (per plane).</summary>
    public long Samples => _samples;

    private int BlockCount => ((_layers + _groupLayers - 1) / _groupLayers) * 2;

    private int BlockLayers(int block) => Math.Min(_groupLayers, _layers - ((block >> 1) * _groupLayers));

    /// <summary>
    /// Adds one chunk of KV (<paramref name="shape"/>'s documented layout, elements of <paramref name="dtype"/>) whose first
    /// token is at position <paramref name="tokenStart"/> of its context.
    /// </summary>
    public void Add(ReadOnlySpan<byte> kv, KvShape shape, DType dtype, long tokenStart)
    {
        CodecChecks.Input(kv, shape, dtype);
        CodecChecks.TokenStart(tokenStart);
        if (shape.Layers != _layers || shape.KvHeads != _kvHeads || shape.HeadDim != _headDim)
        {
            throw new ArgumentException($"kvtc fitter: {shape} is not a chunk of a {_layers}-layer model with {_kvHeads} x {_headDim} KV channels.", nameof(shape));
        }

        int c = shape.Channels;
        int first = Math.Min(_exactHead, shape.Tokens);
        int end = Math.Max(first, shape.Tokens - _exactTail);
        int elementSize = dtype.SizeOf();
        int maxD = _groupLayers * c;
        float[] rowFloats = ArrayPool<float>.Shared.Rent(c);
        double[] row = ArrayPool<double>.Shared.Rent(maxD);
        float[] angles = _keyRotation.RentAngles(tokenStart + first, end - first);
        try
        {
            for (int block = 0; block < BlockCount; block++)
            {
                double[] sum = _sum[block];
                double[] outer = _outer[block];
                int kind = block & 1;
                int firstLayer = (block >> 1) * _groupLayers;
                int d = BlockLayers(block) * c;
                for (int t = first; t < end; t++)
                {
                    Span<double> x = row.AsSpan(0, d);
                    for (int l = 0; l < d / c; l++)
                    {
                        int p = ((firstLayer + l) * 2) + kind;
                        long element = (((long)p * shape.Tokens) + t) * c;
                        FloatConversions.ToSingle(dtype, kv.Slice((int)(element * elementSize), c * elementSize), rowFloats.AsSpan(0, c));
                        if (kind == 0)
                        {
                            _keyRotation.RotateToken(rowFloats.AsSpan(0, c), _headDim, angles, t - first, inverse: true);
                        }

                        for (int j = 0; j < c; j++)
                        {
                            float v = rowFloats[j];
                            if (!float.IsFinite(v))
                            {
                                throw new ArgumentException($"kvtc fitter: a non-finite value in plane {p} token {t}.", nameof(kv));
                            }

                            x[(l * c) + j] = v;
                        }
                    }

                    TensorPrimitives.Add(sum, x, sum);

                    // The upper triangle, row by row: outer[i, i..] += x[i] * x[i..].
                    for (int i = 0; i < d; i++)
                    {
                        Span<double> target = outer.AsSpan((i * d) + i, d - i);
                        TensorPrimitives.MultiplyAdd(x[i..], x[i], target, target);
                    }
                }
            }

            _samples += end - first;
        }
        finally
        {
            ArrayPool<float>.Shared.Return(rowFloats);
            ArrayPool<double>.Shared.Return(row);
            KvtcKeyRotation.ReturnAngles(angles);
        }
    }

    /// <summary>
    /// The transform of the KV added so far, bound to <paramref name="model"/>, with <paramref name="levelBits"/> (default
    /// <see cref="KvtcTransform.DefaultLevelBits"/>: nominal bits per element of each level, descending).
    /// <paramref name="sensitivity"/> (per plane, layer * 2 + kind) is how much the model's loss grows per unit of
    /// relative error (error over the plane's variance) in that plane, as measured
    /// (<c>TransformCalibration.MeasureSensitivity</c>); without it every plane counts alike, so each keeps the same
    /// share of its variance. <paramref name="keyMetric"/> (per layer, channels x channels, row-major; symmetric and
    /// positive semi-definite) is what a key error is read through: the second moment of the layer's queries in the
    /// frame keys are coded in (so that <c>e' M e</c> is the mean squared error of the attention logits that a key error
    /// e makes), scaled to a mean eigenvalue of one (so the plane's weight, and what isotropic noise costs, stay as
    /// measured; eigenvalues floored at 1e-6 of the largest). Without it a key error counts alike in every direction.
    /// Each block's components are the principal axes of its covariance in the block-diagonal metric W these make
    /// (eigenvectors u of <c>W^1/2 C W^1/2</c>; analysis vector <c>W^1/2 u</c>, synthesis vector <c>W^-1/2 u</c>), so
    /// the allocation's modelled error is the weighted error.
    /// </summary>
    public KvtcTransform Build(ModelFingerprint model, IReadOnlyList<float>? levelBits = null, IReadOnlyList<double>? sensitivity = null,
        IReadOnlyList<double[]>? keyMetric = null)
    {
        int channels = _kvHeads * _headDim;
        if (keyMetric is not null && (keyMetric.Count != _layers || keyMetric.Any(m => m is null || m.Length != channels * channels || m.Any(v => !double.IsFinite(v)))))
        {
            throw new ArgumentException($"kvtc: one finite {channels} x {channels} key metric per layer ({_layers}) is needed.", nameof(keyMetric));
        }

        if (sensitivity is not null && (sensitivity.Count != _layers * 2 || sensitivity.Any(s => !(s >= 0) || double.IsInfinity(s))))
        {
            throw new ArgumentException($"kvtc: one finite non-negative sensitivity per plane ({_layers * 2}) is needed.", nameof(sensitivity));
        }

        levelBits ??= KvtcTransform.DefaultLevelBits;
        if (levelBits.Count != KvtcTransform.LevelCount || levelBits.Any(b => !(b > 0 && b <= KvtcTransform.MaxBits)))
        {
            throw new ArgumentException($"kvtc: {KvtcTransform.LevelCount} levels of nominal bits in (0, {KvtcTransform.MaxBits}] are needed.", nameof(levelBits));
        }

        if (_samples < 2)
        {
            throw new InvalidOperationException("kvtc fitter: at least two sample tokens are needed to fit a transform.");
        }

        int c = channels;
        int values = _layers * 2 * c;
        var mean = new float[values];
        var sigma = new float[values];
        long matrices = 0;
        for (int b = 0; b < BlockCount; b++)
        {
            matrices += (long)BlockLayers(b) * c * BlockLayers(b) * c;
        }

        var forward = new float[matrices];
        var inverse = new float[matrices];
        int vectorAt = 0;
        long matrixAt = 0;
        for (int block = 0; block < BlockCount; block++)
        {
            int kind = block & 1;
            int firstLayer = (block >> 1) * _groupLayers;
            int d = BlockLayers(block) * c;
            double[] sum = _sum[block];
            double[] outer = _outer[block];
            var covariance = new double[d * d];
            for (int i = 0; i < d; i++)
            {
                mean[vectorAt + i] = (float)(sum[i] / _samples);
                for (int j = i; j < d; j++)
                {
                    double value = (outer[(i * d) + j] - (sum[i] * sum[j] / _samples)) / (_samples - 1);
                    covariance[(i * d) + j] = value;
                    covariance[(j * d) + i] = value;
                }
            }

            // W^1/2 and W^-1/2, block-diagonal by layer.
            var root = new double[d * d];
            var rootInverse = new double[d * d];
            for (int l = 0; l < d / c; l++)
            {
                int p = ((firstLayer + l) * 2) + kind;
                double trace = 0;
                for (int i = 0; i < c; i++)
                {
                    trace += covariance[(((l * c) + i) * d) + (l * c) + i];
                }

                double scale = trace > 0 ? Math.Max(sensitivity?[p] ?? 1, 1e-30) / trace : 1;
                var weight = new double[c * c];
                double[]? metric = kind == 0 ? keyMetric?[p >> 1] : null;
                double metricTrace = 0;
                for (int i = 0; metric is not null && i < c; i++)
                {
                    metricTrace += metric[(i * c) + i];
                }

                for (int i = 0; i < c; i++)
                {
                    for (int j = 0; j < c; j++)
                    {
                        weight[(i * c) + j] = metricTrace > 0 ? metric![(i * c) + j] * c / metricTrace * scale : (i == j ? scale : 0);
                    }
                }

                Roots(weight, c, root, rootInverse, d, l * c);
            }

            double[] weighted = Sandwich(root, covariance, d);
            var vectors = new double[d * d];
            double[] eigenvalues = SymmetricEigen.Decompose(weighted, d, vectors);
            for (int k = 0; k < d; k++)
            {
                sigma[vectorAt + k] = (float)Math.Sqrt(Math.Max(0, eigenvalues[k]));
                ReadOnlySpan<double> u = vectors.AsSpan(k * d, d);
                for (int i = 0; i < d; i++)
                {
                    forward[matrixAt + ((long)k * d) + i] = (float)TensorPrimitives.Dot(root.AsSpan(i * d, d), u);
                    inverse[matrixAt + ((long)k * d) + i] = (float)TensorPrimitives.Dot(rootInverse.AsSpan(i * d, d), u);
                }
            }

            vectorAt += d;
            matrixAt += (long)d * d;
        }

        var weights = new double[values];
        weights.AsSpan().Fill(1);
        byte[] bits = KvtcAllocation.Allocate(sigma, weights, levelBits);
        return new KvtcTransform(model, _layers, _kvHeads, _headDim, _groupLayers, _exactHead, _exactTail, _keyRotation, [.. levelBits], mean, sigma, forward, inverse, bits);
    }

    /// <summary>
    /// Writes the square root of the symmetric positive semi-definite <paramref name="weight"/> (n x n; eigenvalues
    /// floored at 1e-6 of the largest) and its inverse into the n x n diagonal block at <paramref name="at"/> of
    /// <paramref name="root"/> and <paramref name="rootInverse"/> (d x d).
    /// </summary>
    internal static void Roots(double[] weight, int n, double[] root, double[] rootInverse, int d, int at)
    {
        var vectors = new double[n * n];
        double[] values = SymmetricEigen.Decompose((double[])weight.Clone(), n, vectors);
        double largest = values.Max();
        double floor = largest > 0 ? largest * 1e-6 : 1;
        for (int k = 0; k < n; k++)
        {
            double value = Math.Max(values[k], floor);
            double s = Math.Sqrt(value);
            for (int i = 0; i < n; i++)
            {
                double vi = vectors[(k * n) + i];
                for (int j = 0; j < n; j++)
                {
                    double vv = vi * vectors[(k * n) + j];
                    root[((at + i) * d) + at + j] += vv * s;
                    rootInverse[((at + i) * d) + at + j] += vv / s;
                }
            }
        }
    }

    /// <summary><c>R M R</c> for symmetric <paramref name="r"/> and <paramref name="m"/> (n x n).</summary>
    internal static double[] Sandwich(double[] r, double[] m, int n)
    {
        var rm = new double[n * n];
        for (int i = 0; i < n; i++)
        {
            for (int k = 0; k < n; k++)
            {
                double v = r[(i * n) + k];
                if (v != 0)
                {
                    TensorPrimitives.MultiplyAdd(m.AsSpan(k * n, n), v, rm.AsSpan(i * n, n), rm.AsSpan(i * n, n));
                }
            }
        }

        var result = new double[n * n];
        for (int i = 0; i < n; i++)
        {
            for (int k = 0; k < n; k++)
            {
                double v = rm[(i * n) + k];
                if (v != 0)
                {
                    TensorPrimitives.MultiplyAdd(r.AsSpan(k * n, n), v, result.AsSpan(i * n, n), result.AsSpan(i * n, n));
                }
            }
        }

        return result;
    }
}
