using KvFetcher.Codecs.Transform;
using KvFetcher.Engine.Model;

namespace KvFetcher.Codecs.Tests.Transform;

public class KvtcKeyRotationTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(5)]
    [InlineData(1023)]
    [InlineData(4095)]
    public void Angles_BundledModel_BitIdenticalToTheEngineTable(int position)
    {
        ModelConfig config = RealKv.Model.Config;
        var table = new RotaryTable(config.Rope, config.HeadDim, config.MaxPositionEmbeddings, 4096);
        KvtcKeyRotation rotation = KvtcTestTransforms.KeyRotation;
        var cos = new float[config.HeadDim / 2];
        var sin = new float[config.HeadDim / 2];

        rotation.Angles(position, cos, sin);

        Assert.Equal(table.Cos(position).ToArray(), cos);
        Assert.Equal(table.Sin(position).ToArray(), sin);
    }

    [Theory]
    [InlineData(KvtcKeyPairing.HalfSplit)]
    [InlineData(KvtcKeyPairing.Interleaved)]
    public void Rotate_ThenBack_OriginalWithinRounding(KvtcKeyPairing pairing)
    {
        var rotation = new KvtcKeyRotation(pairing, [1f, 0.1f, 0.01f, 0.001f]);
        var random = new Random(7);
        float[] original = [.. Enumerable.Range(0, 16).Select(_ => (float)(random.NextDouble() - 0.5))];
        float[] row = [.. original];
        var cos = new float[4];
        var sin = new float[4];
        rotation.Angles(1000, cos, sin);

        rotation.Rotate(row, 8, cos, sin, inverse: false);
        Assert.True(original.Zip(row).Max(p => Math.Abs(p.First - p.Second)) > 0.01f);
        rotation.Rotate(row, 8, cos, sin, inverse: true);

        Assert.All(original.Zip(row), p => Assert.Equal(p.First, p.Second, 1e-6f));
    }

    [Fact]
    public void Rotate_Pairing_TurnsTheDocumentedChannelsTogether()
    {
        var cos = new float[] { 0f, 1f };
        var sin = new float[] { 1f, 0f }; // pair 0 by 90 degrees, pair 1 not at all
        float[] half = [1, 2, 3, 4];
        new KvtcKeyRotation(KvtcKeyPairing.HalfSplit, [1f, 1f]).Rotate(half, 4, cos, sin, inverse: false);
        Assert.Equal([-3f, 2f, 1f, 4f], half); // (x0, x2) -> (-x2, x0)

        float[] interleaved = [1, 2, 3, 4];
        new KvtcKeyRotation(KvtcKeyPairing.Interleaved, [1f, 1f]).Rotate(interleaved, 4, cos, sin, inverse: false);
        Assert.Equal([-2f, 1f, 3f, 4f], interleaved); // (x0, x1) -> (-x1, x0)
    }

    [Fact]
    public void Constructor_BadFrequencies_Refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new KvtcKeyRotation(KvtcKeyPairing.HalfSplit, [1f, 0f]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new KvtcKeyRotation(KvtcKeyPairing.HalfSplit, [float.NaN]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new KvtcKeyRotation(KvtcKeyPairing.HalfSplit, []));
        Assert.Throws<ArgumentException>(() => new KvtcKeyRotation(KvtcKeyPairing.None, [1f]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new KvtcKeyRotation((KvtcKeyPairing)7, [1f]));
    }
}
