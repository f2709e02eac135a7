using KvFetcher.Codecs.Transform;
using KvFetcher.Core;
using KvFetcher.Core.Numerics;

namespace KvFetcher.Codecs.Tests.Transform;

public class KvtcFitterTests
{
    /// <summary>
    /// A one-layer fitter over independent Gaussian channels of standard deviations 2, 1.4, 1, 0.7 in K and V, so the PCA
    /// components are the channels, largest first.
    /// </summary>
    private static KvtcFitter Fitted()
    {
        var fitter = new KvtcFitter(1, 1, 4, KvtcKeyRotation.None, exactHead: 0);
        var shape = new KvShape(1, 64, 1, 4);
        var random = new Random(21);
        double[] deviations = [2, 1.4, 1, 0.7];
        for (int chunk = 0; chunk < 8; chunk++)
        {
            float[] values = [.. Enumerable.Range(0, (int)shape.Elements).Select(i => (float)(deviations[i % 4] * Gaussian(random)))];
            var kv = new byte[values.Length * 4];
            FloatConversions.FromSingle(DType.Float32, values, kv);
            fitter.Add(kv, shape, DType.Float32, chunk * 64L);
        }

        return fitter;
    }

    private static double Gaussian(Random random) =>
        Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());

    [Fact]
    public void Build_KeyMetricReadingTheSmallestChannel_GivesItTheBits()
    {
        var metric = new double[16];
        metric[0] = metric[5] = metric[10] = 1;
        metric[15] = 64; // the queries read channel 3, the one of least variance, 64 times as strongly
        KvtcTransform plain = Fitted().Build(KvtcTestTransforms.Model(40));
        KvtcTransform weighted = Fitted().Build(KvtcTestTransforms.Model(40), keyMetric: [metric]);
        const int level = KvtcTransform.LevelCount - 1;

        byte[] plainKeys = plain.Bits(level, 0).ToArray();
        byte[] weightedKeys = weighted.Bits(level, 0).ToArray();
        Assert.True(plainKeys[3] < plainKeys[0], $"without the metric: bits {string.Join(",", plainKeys)}");
        Assert.True(weightedKeys[3] > plainKeys[3] && weightedKeys[3] > weightedKeys[0], $"with it: bits {string.Join(",", weightedKeys)}, without {string.Join(",", plainKeys)}");
    }

    [Fact]
    public void Build_MalformedKeyMetric_Throws()
    {
        KvtcFitter fitter = Fitted();
        Assert.Throws<ArgumentException>(() => fitter.Build(KvtcTestTransforms.Model(41), keyMetric: [new double[15]]));
        Assert.Throws<ArgumentException>(() => fitter.Build(KvtcTestTransforms.Model(41), keyMetric: [new double[16], new double[16]]));
        var nan = new double[16];
        nan[3] = double.NaN;
        Assert.Throws<ArgumentException>(() => fitter.Build(KvtcTestTransforms.Model(41), keyMetric: [nan]));
    }
}
