using System.Globalization;
using KvFetcher.Codecs.Transform;
using KvFetcher.Core;
using KvFetcher.Core.Numerics;
using KvFetcher.Engine;
using KvFetcher.Fetch.Calibration;

namespace KvFetcher.Bench;

/// <summary>
/// <c>kvtc-groups</c>: whether a kvtc transform spanning G neighbouring layers can pay, by the allocator's own
/// rate-distortion model: the weighted error (measured sensitivity per plane over its variance, keys read through the
/// query metric) left at equal nominal bits by per-layer PCA (as kvtc codes now) and by PCA over groups of G layers, on
/// KV of fit documents and, for the held-out estimate, of other documents coded with the fit's basis and bits.
/// </summary>
internal static class KvtcGroupEstimate
{
    private const int MaxGroup = 4;

    public static int Run(string[] args)
    {
        string model = BenchArgs.Option(args, "--model") ?? BenchArgs.BundledModel();
        int fitDocuments = int.Parse(BenchArgs.Option(args, "--fit-documents") ?? "6", CultureInfo.InvariantCulture);
        int testDocuments = int.Parse(BenchArgs.Option(args, "--test-documents") ?? "2", CultureInfo.InvariantCulture);
        using LanguageModel lm = LanguageModel.Open(model, new LanguageModelOptions { KvStorageDType = DType.Float16 });
        var config = lm.Config;
        int layers = config.NumLayers;
        int c = config.NumKvHeads * config.HeadDim;
        IReadOnlyList<string> sources = EvaluationDocuments.FindHeldOut(BenchArgs.RepositoryRoot());
        // The documents the codecs bench measures (the first 20 held out): the fit and test documents are others.
        IReadOnlyList<EvaluationDocument> measured = EvaluationDocuments.Load(lm.Tokenizer, sources, 1024 + 256, 20);
        IReadOnlyList<EvaluationDocument> sample = TransformCalibration.SampleDocuments(lm, sources, measured, 1024, fitDocuments + testDocuments, out _);
        Console.Error.WriteLine($"fit: {string.Join(", ", sample.Take(fitDocuments).Select(d => Path.GetFileName(d.Path)))}; test: {string.Join(", ", sample.Skip(fitDocuments).Select(d => Path.GetFileName(d.Path)))}");
        KvtcKeyRotation rotation = TransformCalibration.KeyRotationOf(config);
        var queries = new QueryMetric(config, rotation);
        int groups = (layers + MaxGroup - 1) / MaxGroup;
        var fit = new Moments(groups * 2, MaxGroup * c);
        var test = new Moments(groups * 2, MaxGroup * c);
        const int ChunkTokens = 256;
        const int ExactHead = 4;
        DType dtype = lm.KvStorageDType;
        var shape = new KvShape(layers, ChunkTokens, config.NumKvHeads, config.HeadDim);
        var chunk = new byte[shape.Elements * dtype.SizeOf()];
        var cos = new float[config.HeadDim / 2];
        var sin = new float[config.HeadDim / 2];
        var row = new float[c];
        var groupRow = new double[MaxGroup * c];
        for (int d = 0; d < sample.Count; d++)
        {
            Moments target = d < fitDocuments ? fit : test;
            int tokens = Math.Min(1024, sample[d].Tokens.Length) / ChunkTokens * ChunkTokens;
            using InferenceSession session = lm.CreateSession(tokens);
            session.Probe = d < fitDocuments ? queries : null;
            session.Prefill(sample[d].Tokens.AsSpan(0, tokens), 0, new float[config.VocabSize]);
            for (int start = 0; start < tokens; start += ChunkTokens)
            {
                session.Cache.Export(start, start + ChunkTokens, dtype, chunk);
                for (int t = ExactHead; t < ChunkTokens; t++)
                {
                    rotation.Angles(start + t, cos, sin);
                    for (int g = 0; g < groups; g++)
                    {
                        for (int kind = 0; kind < 2; kind++)
                        {
                            Array.Clear(groupRow);
                            for (int l = g * MaxGroup; l < Math.Min(layers, (g + 1) * MaxGroup); l++)
                            {
                                int p = (l * 2) + kind;
                                long element = (((long)p * ChunkTokens) + t) * c;
                                FloatConversions.ToSingle(dtype, chunk.AsSpan((int)(element * dtype.SizeOf()), c * dtype.SizeOf()), row);
                                if (kind == 0)
                                {
                                    rotation.Rotate(row, config.HeadDim, cos, sin, inverse: true);
                                }

                                for (int j = 0; j < c; j++)
                                {
                                    groupRow[((l - (g * MaxGroup)) * c) + j] = row[j];
                                }
                            }

                            target.Add((g * 2) + kind, groupRow);
                        }
                    }
                }
            }
        }

        IReadOnlyList<double> sensitivity = TransformCalibration.MeasureSensitivity(lm, [.. sample.Take(2)], ExactHead, ChunkTokens);
        IReadOnlyList<double[]> metric = queries.Metric(1024);

        // Per-layer weight matrices W_l (c x c): keys sens/trace * M / (trace M / c), values sens/trace * I.
        var weight = new double[layers * 2][];
        for (int l = 0; l < layers; l++)
        {
            for (int kind = 0; kind < 2; kind++)
            {
                int p = (l * 2) + kind;
                double[] cov = fit.Covariance((l / MaxGroup * 2) + kind, l % MaxGroup * c, c);
                double trace = 0;
                for (int i = 0; i < c; i++)
                {
                    trace += cov[(i * c) + i];
                }

                double scale = sensitivity[p] / trace;
                var w = new double[c * c];
                if (kind == 0)
                {
                    double mt = 0;
                    for (int i = 0; i < c; i++)
                    {
                        mt += metric[l][(i * c) + i];
                    }

                    for (int i = 0; i < c * c; i++)
                    {
                        w[i] = metric[l][i] * c / mt * scale;
                    }
                }
                else
                {
                    for (int i = 0; i < c; i++)
                    {
                        w[(i * c) + i] = scale;
                    }
                }

                weight[p] = w;
            }
        }

        float[] curve = [.. Enumerable.Range(0, 71).Select(i => 5f - (i * 0.05f))];
        var results = new List<(string Name, double[] Fit, double[] Test)>();
        foreach (int g in new[] { 1, 2, 4 })
        {
            foreach (bool weighted in new[] { false, true })
            {
                var sigma = new List<float>();
                var w = new List<double>();
                var testVar = new List<double>();
                for (int start = 0; start < layers; start += g)
                {
                    int n = Math.Min(g, layers - start);
                    for (int kind = 0; kind < 2; kind++)
                    {
                        int block = (start / MaxGroup * 2) + kind;
                        int offset = start % MaxGroup * c;
                        int dim = n * c;
                        double[] cf = fit.Covariance(block, offset, dim);
                        double[] ct = test.Covariance(block, offset, dim);
                        double[] wg = new double[dim * dim];
                        for (int l = 0; l < n; l++)
                        {
                            double[] wl = weight[((start + l) * 2) + kind];
                            for (int i = 0; i < c; i++)
                            {
                                for (int j = 0; j < c; j++)
                                {
                                    wg[(((l * c) + i) * dim) + (l * c) + j] = wl[(i * c) + j];
                                }
                            }
                        }

                        if (weighted)
                        {
                            double[] root = SquareRoot(wg, dim);
                            cf = KvtcFitter.Sandwich(root, cf, dim);
                            ct = KvtcFitter.Sandwich(root, ct, dim);
                        }

                        var vectors = new double[dim * dim];
                        double[] values = SymmetricEigen.Decompose((double[])cf.Clone(), dim, vectors);
                        for (int k = 0; k < dim; k++)
                        {
                            ReadOnlySpan<double> b = vectors.AsSpan(k * dim, dim);
                            sigma.Add((float)Math.Sqrt(Math.Max(0, values[k])));
                            w.Add(weighted ? 1 : Quadratic(wg, b, dim));
                            testVar.Add(Quadratic(ct, b, dim));
                        }
                    }
                }

                byte[] bits = KvtcAllocation.Allocate([.. sigma], [.. w], curve);
                int count = sigma.Count;
                var fitD = new double[curve.Length];
                var testD = new double[curve.Length];
                for (int level = 0; level < curve.Length; level++)
                {
                    for (int i = 0; i < count; i++)
                    {
                        int b = bits[(level * count) + i];
                        double s2 = (double)sigma[i] * sigma[i];
                        fitD[level] += w[i] * s2 * KvtcAllocation.Distortion(b);
                        testD[level] += w[i] * (b == 0 ? testVar[i] : s2 * KvtcAllocation.Distortion(b));
                    }
                }

                results.Add(($"G={g}{(weighted ? " weighted PCA" : "")}", fitD, testD));
            }
        }

        // Equivalent bits: where the current codec (G=1, PCA then weights) reaches each variant's error.
        (string _, double[] baseFit, double[] baseTest) = results[0];
        Console.WriteLine("| variant | bits | error (fit) | vs G=1 | bits G=1 needs for it | error (held out) | vs G=1 | bits G=1 needs for it |");
        Console.WriteLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        foreach ((string name, double[] f, double[] t) in results)
        {
            foreach (float bitsPerValue in new[] { 4.5f, 4f, 3f, 2.5f, 2.25f, 2f })
            {
                int level = Array.FindIndex(curve, b => Math.Abs(b - bitsPerValue) < 1e-4);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {name} | {bitsPerValue} | {f[level]:E3} | {f[level] / baseFit[level]:F3} | {Equivalent(curve, baseFit, f[level]):F2} | {t[level]:E3} | {t[level] / baseTest[level]:F3} | {Equivalent(curve, baseTest, t[level]):F2} |"));
            }
        }

        return 0;
    }

    private static double Equivalent(float[] curve, double[] error, double target)
    {
        // curve descends in bits, error ascends along it.
        for (int i = 1; i < curve.Length; i++)
        {
            if (error[i] >= target)
            {
                double f = (target - error[i - 1]) / (error[i] - error[i - 1]);
                return curve[i - 1] + (f * (curve[i] - curve[i - 1]));
            }
        }

        return curve[^1];
    }

    private static double Quadratic(double[] m, ReadOnlySpan<double> b, int n)
    {
        double total = 0;
        for (int i = 0; i < n; i++)
        {
            double s = 0;
            for (int j = 0; j < n; j++)
            {
                s += m[(i * n) + j] * b[j];
            }

            total += b[i] * s;
        }

        return total;
    }

    /// <summary>The square root of a symmetric positive semi-definite matrix (the fitter's, eigenvalues floored alike).</summary>
    private static double[] SquareRoot(double[] m, int n)
    {
        var root = new double[n * n];
        KvtcFitter.Roots(m, n, root, new double[n * n], n, 0);
        return root;
    }

    private sealed class Moments(int blocks, int dim)
    {
        private readonly double[][] _sum = [.. Enumerable.Range(0, blocks).Select(_ => new double[dim])];
        private readonly double[][] _outer = [.. Enumerable.Range(0, blocks).Select(_ => new double[dim * dim])];
        private readonly long[] _n = new long[blocks];

        public void Add(int block, double[] x)
        {
            double[] sum = _sum[block];
            double[] outer = _outer[block];
            for (int i = 0; i < dim; i++)
            {
                sum[i] += x[i];
                double xi = x[i];
                if (xi == 0)
                {
                    continue;
                }

                for (int j = i; j < dim; j++)
                {
                    outer[(i * dim) + j] += xi * x[j];
                }
            }

            _n[block]++;
        }

        public double[] Covariance(int block, int offset, int n)
        {
            double[] sum = _sum[block];
            double[] outer = _outer[block];
            long count = _n[block];
            var cov = new double[n * n];
            for (int i = 0; i < n; i++)
            {
                for (int j = i; j < n; j++)
                {
                    int a = offset + i, b = offset + j;
                    double value = (outer[(a * dim) + b] - (sum[a] * sum[b] / count)) / (count - 1);
                    cov[(i * n) + j] = value;
                    cov[(j * n) + i] = value;
                }
            }

            return cov;
        }
    }
}
