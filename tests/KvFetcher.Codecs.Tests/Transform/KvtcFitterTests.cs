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

        // The channels are independent and the metric diagonal, so each component reads one channel: bits by channel.
        byte[] plainKeys = BitsByChannel(plain, level);
        byte[] weightedKeys = BitsByChannel(weighted, level);
        Assert.True(plainKeys[3] < plainKeys[0], $"without the metric: bits {string.Join(",", plainKeys)}");
        Assert.True(weightedKeys[3] > plainKeys[3] && weightedKeys[3] > weightedKeys[0], $"with it: bits {string.Join(",", weightedKeys)}, without {string.Join(",", plainKeys)}");
    }

    /// <summary>The key block's bits at <paramref name="level"/> by the channel each component's analysis vector reads most.</summary>
    private static byte[] BitsByChannel(KvtcTransform transform, int level)
    {
        ReadOnlySpan<byte> bits = transform.Bits(level, 0);
        var byChannel = new byte[bits.Length];
        for (int k = 0; k < bits.Length; k++)
        {
            float[] vector = transform.Forward(0, k).ToArray();
            int channel = Array.IndexOf(vector, vector.MaxBy(MathF.Abs));
            byChannel[channel] = bits[k];
        }

        return byChannel;
    }

    [Fact]
    public void Build_GroupOfLayers_ComponentsSpanTheLayersAndInvertTheAnalysis()
    {
        // Two layers whose channels move together (layer 1 = layer 0 plus a little noise): one transform over both
        // puts the shared signal in few components, each reading both layers.
        var fitter = new KvtcFitter(2, 1, 4, KvtcKeyRotation.None, exactHead: 0, groupLayers: 2);
        var shape = new KvShape(2, 64, 1, 4);
        var random = new Random(5);
        for (int chunk = 0; chunk < 8; chunk++)
        {
            var values = new float[shape.Elements];
            for (int kind = 0; kind < 2; kind++)
            {
                for (int t = 0; t < 64; t++)
                {
                    for (int j = 0; j < 4; j++)
                    {
                        float shared = (float)Gaussian(random);
                        values[(((0 * 2) + kind) * 64 * 4) + (t * 4) + j] = shared;
                        values[(((1 * 2) + kind) * 64 * 4) + (t * 4) + j] = shared + (0.05f * (float)Gaussian(random));
                    }
                }
            }

            var kv = new byte[values.Length * 4];
            FloatConversions.FromSingle(DType.Float32, values, kv);
            fitter.Add(kv, shape, DType.Float32, chunk * 64L);
        }

        KvtcTransform transform = fitter.Build(KvtcTestTransforms.Model(42));
        Assert.Equal(2, transform.Blocks);
        Assert.Equal(8, transform.BlockChannels(0));
        ReadOnlySpan<float> sigma = transform.Sigma(0);
        Assert.True(sigma[3] > 10 * sigma[4], $"sigmas {string.Join(", ", sigma.ToArray())}: four shared directions, four small ones");
        float[] first = transform.Forward(0, 0).ToArray();
        Assert.True(first[..4].Sum(MathF.Abs) > 0.3 * first.Sum(MathF.Abs) && first[4..].Sum(MathF.Abs) > 0.3 * first.Sum(MathF.Abs), $"component 0 reads {string.Join(", ", first)}");
        for (int k = 0; k < 8; k++)
        {
            for (int j = 0; j < 8; j++)
            {
                float dot = 0;
                for (int i = 0; i < 8; i++)
                {
                    dot += transform.Forward(0, k)[i] * transform.Inverse(0, j)[i];
                }

                Assert.True(Math.Abs(dot - (k == j ? 1 : 0)) < 1e-3, $"forward {k} . inverse {j} = {dot}");
            }
        }
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
