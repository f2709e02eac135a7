using KvFetcher.Core.Keys;

namespace KvFetcher.Core.Containers;

/// <summary>The fixed fields of a chunk container: what the chunk is, where it goes, and how it was coded.</summary>
public readonly record struct ChunkHeader
{
    public CodecId Codec { get; init; }

    public byte Level { get; init; }

    /// <summary>The element type the KV was encoded from and decodes to.</summary>
    public DType DType { get; init; }

    public ChunkKey Key { get; init; }

    public ModelFingerprint Model { get; init; }

    /// <summary>First token position of the chunk in its context.</summary>
    public long TokenStart { get; init; }

    public KvShape Shape { get; init; }

    /// <summary>Whether the container carries a MAC tag (only a reader with the tenant's key can check it).</summary>
    public bool Authenticated { get; init; }

    /// <summary>
    /// Layers per group of a layer-addressable container (version 2, <see cref="ChunkLayerTable"/>), whose groups can be
    /// read and verified apart; 0 for a container without a layer table.
    /// </summary>
    public int LayerGroup { get; init; }

    public override string ToString() =>
        $"{Codec.ToName()} level {Level}, {DType.ToShortName()}, tokens [{TokenStart}, {TokenStart + Shape.Tokens}), {Shape}, key {Key}, model {Model}{(Authenticated ? ", authenticated" : "")}";
}

/// <summary>
/// What a reader expects of a container: it is refused unless every field matches and, with <see cref="Mac"/>, unless
/// its MAC tag verifies under that key.
/// </summary>
public readonly record struct ChunkExpectation(ChunkKey Key, ModelFingerprint Model, long TokenStart, KvShape Shape, DType DType)
{
    /// <summary>The tenant's MAC key when the store is untrusted; null accepts containers on their checksum.</summary>
    public ChunkMacKey? Mac { get; init; }
}
