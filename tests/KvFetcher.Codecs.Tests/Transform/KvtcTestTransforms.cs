using KvFetcher.Codecs.Transform;
using KvFetcher.Core;
using KvFetcher.Core.Keys;

namespace KvFetcher.Codecs.Tests.Transform;

/// <summary>kvtc transforms for tests, fitted to the bundled model's real KV (<see cref="RealKv"/>).</summary>
internal static class KvtcTestTransforms
{
    /// <summary>Tokens of the real KV the transforms are fitted to; tests code tokens after these.</summary>
    public const int FitTokens = 384;

    private static readonly Lazy<KvtcTransform> s_realKv = new(() => Fit(exactTail: 0, Model(1)));

    /// <summary>A fingerprint for tests.</summary>
    public static ModelFingerprint Model(ulong value) => new(new Hash256(value, 0, 0, value));

    /// <summary>The transform of the bundled model's real KV (4 exact head tokens), registered for <see cref="TransformCodec.Instance"/>.</summary>
    public static KvtcTransform ForRealKv
    {
        get
        {
            KvtcTransform transform = s_realKv.Value;
            KvtcTransforms.Register(transform);
            return transform;
        }
    }

    /// <summary>
    /// The bundled model's key rotation: its engine turns channel pairs (i, i + headDim / 2) by the inverse frequencies of
    /// its rope config (as <c>TransformCalibration.KeyRotationOf</c> records it; Fetch.Tests checks that against the engine).
    /// </summary>
    public static KvtcKeyRotation KeyRotation
    {
        get
        {
            var config = Tests.RealKv.Model.Config;
            return new KvtcKeyRotation(KvtcKeyPairing.HalfSplit, config.Rope.Compute(config.HeadDim, config.MaxPositionEmbeddings, config.MaxPositionEmbeddings).InverseFrequencies);
        }
    }

    /// <summary>
    /// A transform fitted to the first <see cref="FitTokens"/> tokens of the real KV, in 64-token chunks, keys before RoPE
    /// (with <paramref name="keyRotation"/> <see cref="KvtcKeyRotation.None"/>: as stored), spanning
    /// <paramref name="groupLayers"/> neighbouring layers.
    /// </summary>
    public static KvtcTransform Fit(int exactTail, ModelFingerprint model, int exactHead = 4, KvtcKeyRotation? keyRotation = null,
        int groupLayers = KvtcFitter.DefaultGroupLayers)
    {
        (_, KvShape shape) = Tests.RealKv.Chunk(0, 64, DType.Float16);
        var fitter = new KvtcFitter(shape.Layers, shape.KvHeads, shape.HeadDim, keyRotation ?? KeyRotation, exactHead, exactTail, groupLayers);
        for (int start = 0; start < FitTokens; start += 64)
        {
            (byte[] kv, KvShape chunk) = Tests.RealKv.Chunk(start, 64, DType.Float16);
            fitter.Add(kv, chunk, DType.Float16, start);
        }

        return fitter.Build(model);
    }
}
