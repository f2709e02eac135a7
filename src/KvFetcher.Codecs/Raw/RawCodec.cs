using System.Buffers;
using KvFetcher.Core;

namespace KvFetcher.Codecs.Raw;

/// <summary>The values as stored: the floor every compressed codec is measured against.</summary>
public sealed class RawCodec : ILayerAddressableCodec
{
    public static RawCodec Instance { get; } = new();

    public CodecId Id => CodecId.Raw;

    public string Name => CodecId.Raw.ToName();

    public IReadOnlyList<int> Levels { get; } = [0];

    public int DefaultLevel => 0;

    public bool IsLossless(int level) => true;

    /// <summary>The values as stored: the payload is the input, no parameters.</summary>
    public long GetMaxEncodedLength(KvShape shape, DType dtype, int level)
    {
        shape.Validate();
        return shape.Elements * dtype.SizeOf();
    }

    public void Encode(ReadOnlySpan<byte> kv, KvShape shape, DType dtype, long tokenStart, int level, IBufferWriter<byte> parameters, IBufferWriter<byte> payload)
    {
        CodecChecks.Input(kv, shape, dtype);
        CodecChecks.TokenStart(tokenStart);
        CodecChecks.Level(this, level);
        payload.Write(kv);
    }

    public void Decode(ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, KvShape shape, DType dtype, long tokenStart, int level, Span<byte> destination)
    {
        CodecChecks.Output(destination, shape, dtype);
        CodecChecks.TokenStart(tokenStart);
        CodecChecks.Level(this, level);
        if (!parameters.IsEmpty)
        {
            throw new InvalidKvDataException($"raw: codec parameters must be empty; found {parameters.Length} bytes.");
        }

        if (payload.Length != destination.Length)
        {
            throw new InvalidKvDataException($"raw: payload length {payload.Length} does not match the {destination.Length} bytes of {shape} in {dtype.ToShortName()}.");
        }

        payload.CopyTo(destination);
    }

    /// <summary>No prefix: layer l is the payload's l-th slice of <c>2 x tokens x channels</c> values.</summary>
    public int GetLayerEnds(ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, KvShape shape, DType dtype, int level, Span<long> layerEnds)
    {
        CodecChecks.Level(this, level);
        shape.Validate();
        if (layerEnds.Length != shape.Layers)
        {
            throw new ArgumentException($"raw: {layerEnds.Length} layer ends for {shape.Layers} layers.", nameof(layerEnds));
        }

        long layerBytes = 2L * shape.Tokens * shape.Channels * dtype.SizeOf();
        if (!parameters.IsEmpty || payload.Length != layerBytes * shape.Layers)
        {
            throw new InvalidKvDataException($"raw: {parameters.Length} parameter and {payload.Length} payload bytes are not {shape} in {dtype.ToShortName()}.");
        }

        for (int layer = 0; layer < shape.Layers; layer++)
        {
            layerEnds[layer] = (layer + 1) * layerBytes;
        }

        return 0;
    }
}
