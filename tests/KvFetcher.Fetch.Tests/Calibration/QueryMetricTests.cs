using KvFetcher.Codecs.Transform;
using KvFetcher.Core;
using KvFetcher.Engine;
using KvFetcher.Fetch.Calibration;
using KvFetcher.Tests;

namespace KvFetcher.Fetch.Tests.Calibration;

public sealed class QueryMetricTests
{
    private static (LanguageModel Model, QueryMetric Before, QueryMetric AsStored) Observe(string directory, int tokens)
    {
        LanguageModel model = LanguageModel.Open(Path.Combine(Repository.Root, directory), new LanguageModelOptions { KvStorageDType = DType.Float32, Threads = 1 });
        var before = new QueryMetric(model.Config, TransformCalibration.KeyRotationOf(model.Config));
        var asStored = new QueryMetric(model.Config, KvtcKeyRotation.None);
        int[] ids = [.. Enumerable.Range(0, tokens).Select(i => 3 + ((i * 11) % 300))];
        foreach (QueryMetric probe in new[] { before, asStored })
        {
            using InferenceSession session = model.CreateSession(tokens);
            session.Probe = probe;
            session.Prefill(ids, 0, new float[model.Config.VocabSize]);
        }

        return (model, before, asStored);
    }

    [Fact]
    public void Metric_GroupedQueryModel_SymmetricWithTheQueriesEnergyOnItsDiagonal()
    {
        (LanguageModel model, QueryMetric before, QueryMetric asStored) = Observe("tests/TestData/models/tiny-llama-gqa4", 200);
        using (model)
        {
            int c = model.Config.NumKvHeads * model.Config.HeadDim;
            IReadOnlyList<double[]> pre = before.Metric(200);
            IReadOnlyList<double[]> post = asStored.Metric(200);
            Assert.Equal(model.Config.NumLayers, pre.Count);
            for (int layer = 0; layer < pre.Count; layer++)
            {
                double preTrace = 0, postTrace = 0;
                for (int i = 0; i < c; i++)
                {
                    preTrace += pre[layer][(i * c) + i];
                    postTrace += post[layer][(i * c) + i];
                    for (int j = 0; j < i; j++)
                    {
                        Assert.Equal(pre[layer][(i * c) + j], pre[layer][(j * c) + i], 1e-3 * Math.Abs(pre[layer][(i * c) + i]) + 1e-9);
                    }
                }

                // A rotation keeps each query's energy: both frames see the same total, the four query heads' summed.
                Assert.True(preTrace > 0);
                Assert.Equal(1.0, preTrace / postTrace, 3);
            }
        }
    }
}
