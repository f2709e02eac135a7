using KvFetcher.Codecs.Transform;
using KvFetcher.Engine.Cpu;
using KvFetcher.Engine.Model;

namespace KvFetcher.Fetch.Calibration;

/// <summary>
/// What a key error costs in attention logits, per layer, for the kvtc fitter's key metric: an error e in a key (in the
/// frame kvtc codes keys in) shifts the logit of a query q at distance d by <c>(R(-d) q) . e</c> (R: the rotary
/// embedding), so the metric is the second moment of the queries that read the key, summed over the query heads sharing
/// its KV head and averaged over distances. Collected as an <see cref="IAttentionProbe"/> during the fit's prefills
/// (queries before RoPE when keys are coded before it, after it when keys are coded as stored).
/// </summary>
public sealed class QueryMetric : IAttentionProbe
{
    private readonly ModelConfig _config;
    private readonly KvtcKeyRotation _keyRotation;
    private readonly double[][] _moments; // per layer and KV head, headDim x headDim
    private long _rows;

    /// <param name="config">The model.</param>
    /// <param name="keyRotation">The key frame of the transform being fitted (<see cref="KvtcKeyRotation.None"/>: keys as stored).</param>
    public QueryMetric(ModelConfig config, KvtcKeyRotation keyRotation)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(keyRotation);
        _config = config;
        _keyRotation = keyRotation;
        _moments = [.. Enumerable.Range(0, config.NumLayers * config.NumKvHeads).Select(_ => new double[config.HeadDim * config.HeadDim])];
    }

    public void Observe(int layer, int start, int count, ReadOnlySpan<float> queries, ReadOnlySpan<float> keys, bool rotated)
    {
        if (rotated != _keyRotation.IsNone)
        {
            return; // the queries in the other frame
        }

        int d = _config.HeadDim;
        int heads = _config.NumHeads;
        int group = heads / _config.NumKvHeads;
        for (int t = 0; t < count; t++)
        {
            for (int h = 0; h < heads; h++)
            {
                ReadOnlySpan<float> q = queries.Slice(((t * heads) + h) * d, d);
                double[] moment = _moments[(layer * _config.NumKvHeads) + (h / group)];
                for (int i = 0; i < d; i++)
                {
                    double qi = q[i];
                    Span<double> row = moment.AsSpan(i * d, d);
                    for (int j = 0; j < d; j++)
                    {
                        row[j] += qi * q[j];
                    }
                }
            }
        }

        if (layer == 0)
        {
            _rows += count;
        }
    }

    /// <summary>
    /// The metric of every layer (kvHeads * headDim squared, block-diagonal by KV head), averaged over query-key distances
    /// spread evenly over [0, <paramref name="distances"/>) when keys are coded before RoPE.
    /// </summary>
    public IReadOnlyList<double[]> Metric(int distances)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(distances, 1);
        if (_rows == 0)
        {
            throw new InvalidOperationException("No queries were observed.");
        }

        int d = _config.HeadDim;
        int kvHeads = _config.NumKvHeads;
        int c = kvHeads * d;
        const int Samples = 64;
        var cos = new float[d / 2];
        var sin = new float[d / 2];
        var moment = new float[d * d];
        var rotated = new float[d * d];
        var average = new double[d * d];
        var metrics = new double[_config.NumLayers][];
        for (int layer = 0; layer < _config.NumLayers; layer++)
        {
            var metric = new double[c * c];
            for (int h = 0; h < kvHeads; h++)
            {
                double[] sum = _moments[(layer * kvHeads) + h];
                for (int i = 0; i < sum.Length; i++)
                {
                    moment[i] = (float)(sum[i] / _rows);
                }

                Array.Clear(average);
                int samples = _keyRotation.IsNone ? 1 : Samples;
                for (int s = 0; s < samples; s++)
                {
                    // R(-dist) S R(-dist)': turn every row back by the distance, transpose, turn every row back again.
                    long distance = (long)s * distances / samples;
                    _keyRotation.Angles(distance, cos, sin);
                    moment.CopyTo(rotated, 0);
                    for (int pass = 0; pass < 2; pass++)
                    {
                        for (int i = 0; i < d; i++)
                        {
                            _keyRotation.Rotate(rotated.AsSpan(i * d, d), d, cos, sin, inverse: true);
                        }

                        Transpose(rotated, d);
                    }

                    for (int i = 0; i < average.Length; i++)
                    {
                        average[i] += rotated[i] / (double)samples;
                    }
                }

                for (int i = 0; i < d; i++)
                {
                    average.AsSpan(i * d, d).CopyTo(metric.AsSpan((((h * d) + i) * c) + (h * d), d));
                }
            }

            metrics[layer] = metric;
        }

        return metrics;
    }

    private static void Transpose(float[] square, int n)
    {
        for (int i = 0; i < n; i++)
        {
            for (int j = i + 1; j < n; j++)
            {
                (square[(i * n) + j], square[(j * n) + i]) = (square[(j * n) + i], square[(i * n) + j]);
            }
        }
    }
}
