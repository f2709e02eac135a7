namespace KvFetcher.Core.Keys;

/// <summary>
/// Identifies a model's exact computation: a digest over its architecture config, tensor names, shapes, dtypes and
/// weight bytes. KV computed by one model is never restored into another: the fingerprint is part of every chunk
/// key and of every chunk container.
/// </summary>
public readonly record struct ModelFingerprint(Hash256 Value)
{
    public override string ToString() => Value.ToString();
}
