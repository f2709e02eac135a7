using KvFetcher.Codecs.Transform;
using KvFetcher.Core;
using KvFetcher.Engine;
using KvFetcher.Fetch.Calibration;
using KvFetcher.Tests;

namespace KvFetcher.Fetch.Tests.Calibration;

/// <summary>The key rotation kvtc records for a model, checked against what the engine does to its keys.</summary>
public sealed class TransformCalibrationTests
{
    /// <summary>
    /// A layer-0 key before RoPE is a function of its token alone (its embedding, normalized, projected), so one token at
    /// two positions has one key once the rotation is taken off, exactly when the recorded rotation is the engine's.
    /// </summary>
    [Theory]
    [InlineData("models/kvf-code-32l")]
    [InlineData("tests/TestData/models/tiny-llama3-rope")] // llama3 rope scaling
    [InlineData("tests/TestData/models/tiny-qwen2")] // key biases
    public void KeyRotationOf_OneTokenAtTwoPositions_OneKeyOnceUnrotated(string directory)
    {
        using LanguageModel model = LanguageModel.Open(Path.Combine(Repository.Root, directory), new LanguageModelOptions { KvStorageDType = DType.Float32, Threads = 1 });
        const int tokens = 700, first = 3, second = 650;
        int[] ids = [.. Enumerable.Range(0, tokens).Select(i => 3 + ((i * 7) % 200))];
        ids[second] = ids[first];
        using InferenceSession session = model.CreateSession(tokens);
        session.Prefill(ids, 0, new float[model.Config.VocabSize]);
        int c = model.Config.NumKvHeads * model.Config.HeadDim;
        var bytes = new byte[session.Cache.GetExportByteCount(tokens, DType.Float32)];
        session.Cache.Export(0, tokens, DType.Float32, bytes);
        var kv = new float[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, kv, 0, bytes.Length);
        KvtcKeyRotation rotation = TransformCalibration.KeyRotationOf(model.Config);

        float[] Unrotated(int position, int at)
        {
            float[] key = kv.AsSpan(position * c, c).ToArray(); // plane 0: layer 0's keys
            var cos = new float[model.Config.HeadDim / 2];
            var sin = new float[model.Config.HeadDim / 2];
            rotation.Angles(at, cos, sin);
            rotation.Rotate(key, model.Config.HeadDim, cos, sin, inverse: true);
            return key;
        }

        float[] a = Unrotated(first, first);
        float[] b = Unrotated(second, second);
        float[] off = Unrotated(second, second + 1);
        double scale = a.Max(Math.Abs);
        double same = a.Zip(b).Max(p => Math.Abs(p.First - p.Second));
        double shifted = a.Zip(off).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(same < 1e-4 * scale, $"{directory}: unrotated keys differ by {same:E2} (largest channel {scale:E2})");
        Assert.True(shifted > 1e-2 * scale, $"{directory}: un-rotating one position off changed the key by only {shifted:E2}");
    }
}
