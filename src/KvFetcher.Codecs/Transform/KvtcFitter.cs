using System.Buffers;
using System.Numerics.Tensors;
using KvFetcher.Core;
using KvFetcher.Core.Keys;
using KvFetcher.Core.Numerics;

namespace KvFetcher.Codecs.Transform;

/// <summary>
/// Fits a <see cref="KvtcTransform"/> to sample KV of one model: <see cref="Add"/> accumulates each plane's channel
/// means and covariance (in double) over chunks of real KV, keys with the model's rotary embedding taken off (as the
/// codec codes them), leaving out the tokens the codec keeps exact (attention sinks would dominate the covariance);
/// <see cref="Build"/> takes the eigendecomposition of each covariance (Jacobi), then allocates bits across all planes'
/// components by their variance (<see cref="KvtcAllocation"/>), each plane's error weighted by the model's measured
/// sensitivity to it over the plane's total variance (without a measurement, every layer, K and V, keeps the same share
/// of its signal) and, with a key metric, each key component's error by how strongly the layer's queries read along it.
/// </summary>
public sealed class KvtcFitter
{
    private readonly int _layers, _kvHeads, _headDim, _exactHead, _exactTail;
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
    public KvtcFitter(int layers, int kvHeads, int headDim, KvtcKeyRotation keyRotation, int exactHead = 4, int exactTail = 0)
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
        _sum = new double[layers * 2][];
        _outer = new double[layers * 2][];
        for (int p = 0; p < layers * 2; p++)
        {
            _sum[p] = new double[c];
            _outer[p] = new double[c * c];
        }
    }

    /// <summary>Tokens at the start of each chunk the codec keeps exact (left out of the fit).</summary>
    public int ExactHead => _exactHead;

    /// <summary>Tokens accumulated so far (per plane).</summary>
    public long Samples => _samples;

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
        float[] rowFloats = ArrayPool<float>.Shared.Rent(c);
        double[] row = ArrayPool<double>.Shared.Rent(c);
        float[] angles = _keyRotation.RentAngles(tokenStart + first, end - first);
        try
        {
            for (int p = 0; p < _layers * 2; p++)
            {
                double[] sum = _sum[p];
                double[] outer = _outer[p];
                for (int t = first; t < end; t++)
                {
                    long element = (((long)p * shape.Tokens) + t) * c;
                    FloatConversions.ToSingle(dtype, kv.Slice((int)(element * elementSize), c * elementSize), rowFloats.AsSpan(0, c));
                    if ((p & 1) == 0)
                    {
                        _keyRotation.RotateToken(rowFloats.AsSpan(0, c), _headDim, angles, t - first, inverse: true);
                    }

                    Span<double> x = row.AsSpan(0, c);
                    for (int j = 0; j < c; j++)
                    {
                        float v = rowFloats[j];
                        if (!float.IsFinite(v))
                        {
                            throw new ArgumentException($"kvtc fitter: a non-finite value in plane {p} token {t}.", nameof(kv));
                        }

                        x[j] = v;
                    }

                    TensorPrimitives.Add(sum, x, sum);

                    // The upper triangle, row by row: outer[i, i..] += x[i] * x[i..].
                    for (int i = 0; i < c; i++)
                    {
                        Span<double> target = outer.AsSpan((i * c) + i, c - i);
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
    /// e makes); each key component k is then weighted by <c>b_k' M b_k</c> over the mean of that over the plane's
    /// components (so the plane's weight, and what isotropic noise costs, stay as measured). Without it every component
    /// of a plane counts alike.
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

        int c = _kvHeads * _headDim;
        int planes = _layers * 2;
        var mean = new float[planes * c];
        var sigma = new float[planes * c];
        var basis = new float[(long)planes * c * c];
        var weights = new double[planes * c];
        var covariance = new double[c * c];
        var vectors = new double[c * c];
        for (int p = 0; p < planes; p++)
        {
            double[] sum = _sum[p];
            double[] outer = _outer[p];
            for (int i = 0; i < c; i++)
            {
                mean[(p * c) + i] = (float)(sum[i] / _samples);
                for (int j = i; j < c; j++)
                {
                    double value = (outer[(i * c) + j] - (sum[i] * sum[j] / _samples)) / (_samples - 1);
                    covariance[(i * c) + j] = value;
                    covariance[(j * c) + i] = value;
                }
            }

            double[] eigenvalues = SymmetricEigen.Decompose(covariance, c, vectors);
            double trace = 0;
            for (int k = 0; k < c; k++)
            {
                double variance = Math.Max(0, eigenvalues[k]);
                trace += variance;
                sigma[(p * c) + k] = (float)Math.Sqrt(variance);
                for (int j = 0; j < c; j++)
                {
                    basis[(((long)p * c) + k) * c + j] = (float)vectors[(k * c) + j];
                }
            }

            double planeWeight = trace > 0 ? (sensitivity?[p] ?? 1) / trace : 0;
            Span<double> componentWeights = weights.AsSpan(p * c, c);
            componentWeights.Fill(planeWeight);
            if (keyMetric is not null && (p & 1) == 0)
            {
                ComponentMetric(keyMetric[p >> 1], vectors, c, componentWeights);
            }
        }

        byte[] bits = KvtcAllocation.Allocate(sigma, weights, levelBits);
        return new KvtcTransform(model, _layers, _kvHeads, _headDim, _exactHead, _exactTail, _keyRotation, [.. levelBits], mean, sigma, basis, bits);
    }

    /// <summary>
    /// Scales <paramref name="weights"/> (one plane's components) by each basis vector's reading under
    /// <paramref name="metric"/>, <c>b_k' M b_k</c>, over their mean (their sum is the metric's trace); a metric with no
    /// trace leaves them as they are.
    /// </summary>
    private static void ComponentMetric(double[] metric, double[] vectors, int c, Span<double> weights)
    {
        var reading = new double[c];
        var mb = new double[c];
        double total = 0;
        for (int k = 0; k < c; k++)
        {
            ReadOnlySpan<double> b = vectors.AsSpan(k * c, c);
            for (int i = 0; i < c; i++)
            {
                mb[i] = TensorPrimitives.Dot(metric.AsSpan(i * c, c), b);
            }

            reading[k] = Math.Max(0, TensorPrimitives.Dot<double>(b, mb));
            total += reading[k];
        }

        if (!(total > 0))
        {
            return;
        }

        for (int k = 0; k < c; k++)
        {
            weights[k] *= reading[k] * c / total;
        }
    }
}
