using KvFetcher.Codecs;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Core.Keys;
using KvFetcher.Store;

namespace KvFetcher.Fetch;

/// <summary>
/// A prompt cut into chunks: the chained key of every full chunk, and how many of them may be reused (the prompt's last
/// token is always computed, since its logits give the first token).
/// </summary>
public sealed class ContextPlan
{
    private ContextPlan(int[] tokens, ChunkKey[] keys, ModelFingerprint model, int chunkTokens, KvShape chunkShape, DType dtype, ChunkMacKey? mac, int layerGroup)
    {
        Mac = mac;
        LayerGroup = layerGroup;
        Tokens = tokens;
        Keys = keys;
        Model = model;
        ChunkTokens = chunkTokens;
        ChunkShape = chunkShape;
        DType = dtype;
        ReusableChunks = Math.Min(keys.Length, (tokens.Length - 1) / chunkTokens);
    }

    public int[] Tokens { get; }

    /// <summary>Keys of the full chunks.</summary>
    public ChunkKey[] Keys { get; }

    public ModelFingerprint Model { get; }

    public int ChunkTokens { get; }

    /// <summary>The shape of one chunk's KV.</summary>
    public KvShape ChunkShape { get; }

    /// <summary>The element type chunks are stored in: the engine's KV storage type, so reuse is exact.</summary>
    public DType DType { get; }

    /// <summary>The tenant's chunk MAC key when the store is untrusted: containers are sealed and verified with it.</summary>
    public ChunkMacKey? Mac { get; }

    /// <summary>
    /// Layers per group of the layer-addressable containers written for layer-addressable codecs (raw, exact); 0 writes
    /// plain containers (<see cref="ReuseOptions.LayerGroup"/>).
    /// </summary>
    public int LayerGroup { get; }

    /// <summary>Full chunks that end before the prompt's last token.</summary>
    public int ReusableChunks { get; }

    /// <summary>Bytes of one chunk's KV in <see cref="DType"/>.</summary>
    public int ChunkBytes => checked((int)(ChunkShape.Elements * DType.SizeOf()));

    /// <summary>The plan of <paramref name="tokens"/>; with <paramref name="authenticator"/>, chunks are sealed with and verified against the tenant's MAC key.</summary>
    public static ContextPlan Create(ModelFingerprint model, string tenantSalt, int[] tokens, int chunkTokens, int layers, int kvHeads, int headDim, DType dtype,
        ChunkAuthenticator? authenticator = null, int layerGroup = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layerGroup);
        ArgumentNullException.ThrowIfNull(tokens);
        if (tokens.Length == 0)
        {
            throw new ArgumentException("A prompt needs at least one token.", nameof(tokens));
        }

        if (dtype is not (DType.Float16 or DType.BFloat16 or DType.Float32))
        {
            throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "KV is stored as fp16, bf16 or fp32.");
        }

        ChunkKey[] keys = ChunkKey.ComputeChain(model, tenantSalt, tokens, chunkTokens);
        return new ContextPlan(tokens, keys, model, chunkTokens, new KvShape(layers, chunkTokens, kvHeads, headDim), dtype, authenticator?.ForTenant(tenantSalt), layerGroup);
    }

    public ObjectKey ObjectKeyOf(int chunk, KvVariant variant) => ObjectKey.ForChunk(Keys[chunk], variant.Codec, variant.Level);

    /// <summary>The position in the prompt of chunk <paramref name="chunk"/>'s first token.</summary>
    public long TokenStartOf(int chunk) => (long)chunk * ChunkTokens;

    /// <summary>What a container for <paramref name="chunk"/> must declare to be restored.</summary>
    public ChunkExpectation Expectation(int chunk) => new(Keys[chunk], Model, TokenStartOf(chunk), ChunkShape, DType) { Mac = Mac };

    /// <summary>
    /// Writes chunk <paramref name="chunk"/>'s container (sealed when the plan has a MAC key; layer-addressable when the
    /// variant's codec is and <see cref="LayerGroup"/> is set).
    /// </summary>
    public void WriteContainer(int chunk, KvVariant variant, ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, System.Buffers.IBufferWriter<byte> output) =>
        variant.GetCodec().WriteContainer(Header(chunk, variant), parameters, payload, LayerGroup, output, Mac);

    public ChunkHeader Header(int chunk, KvVariant variant) => new()
    {
        Codec = variant.Codec,
        Level = variant.Level,
        DType = DType,
        Key = Keys[chunk],
        Model = Model,
        TokenStart = TokenStartOf(chunk),
        Shape = ChunkShape,
    };
}
