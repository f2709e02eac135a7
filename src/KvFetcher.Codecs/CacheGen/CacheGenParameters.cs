using System.Buffers;
using System.Buffers.Binary;
using KvFetcher.Core;

namespace KvFetcher.Codecs.CacheGen;

/// <summary>
/// The parameter block both CacheGen codecs share (<see cref="CacheGenCodec"/>, <see cref="CacheGenPaperCodec"/>), one
/// definition of its common part: a header (u8 format version, u8 level, u16 layers, u32 tokens, u32 channels, then the
/// codec's own bytes up to its header size), a u32 stream length per plane, and an fp16 scale per (plane, token).
/// A plane is p = layer * 2 + kind (0 = K, 1 = V).
/// </summary>
internal static class CacheGenParameters
{
    /// <summary>Where a codec's own header bytes start.</summary>
    public const int CommonHeaderBytes = 12;

    /// <summary>The block's length for <paramref name="shape"/> under a header of <paramref name="headerBytes"/>.</summary>
    public static long Length(KvShape shape, int headerBytes) =>
        headerBytes + (4L * shape.Layers * 2) + (2L * shape.Layers * 2 * shape.Tokens);

    /// <summary>Writes the block; the header's bytes after the common part are <paramref name="own"/>, then zeros.</summary>
    public static void Write(IBufferWriter<byte> parameters, int headerBytes, byte version, int level, KvShape shape, ReadOnlySpan<byte> own,
        ReadOnlySpan<int> lengths, ReadOnlySpan<ushort> scales)
    {
        int bytes = headerBytes + (4 * lengths.Length) + (2 * scales.Length);
        Span<byte> output = parameters.GetSpan(bytes)[..bytes];
        output[..headerBytes].Clear();
        output[0] = version;
        output[1] = (byte)level;
        BinaryPrimitives.WriteUInt16LittleEndian(output[2..], (ushort)shape.Layers);
        BinaryPrimitives.WriteUInt32LittleEndian(output[4..], (uint)shape.Tokens);
        BinaryPrimitives.WriteUInt32LittleEndian(output[8..], (uint)shape.Channels);
        own.CopyTo(output[CommonHeaderBytes..headerBytes]);
        int position = headerBytes;
        foreach (int length in lengths)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(output[position..], (uint)length);
            position += 4;
        }

        foreach (ushort scale in scales)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(output[position..], scale);
            position += 2;
        }

        parameters.Advance(bytes);
    }

    /// <summary>
    /// Checks the block's length and common header against the caller's shape and level (the codec's own header bytes
    /// are the caller's to check); <paramref name="codec"/> names it in the messages.
    /// </summary>
    public static void Check(ReadOnlySpan<byte> parameters, string codec, int headerBytes, byte version, KvShape shape, int level)
    {
        long expected = Length(shape, headerBytes);
        if (parameters.Length != expected)
        {
            throw new InvalidKvDataException($"{codec}: parameters hold {parameters.Length} bytes; {shape} needs {expected} (header, stream lengths, fp16 scales).");
        }

        if (parameters[0] != version)
        {
            throw new InvalidKvDataException($"{codec}: parameters offset 0: format version {parameters[0]} is not {version}.");
        }

        if (parameters[1] != level)
        {
            throw new InvalidKvDataException($"{codec}: parameters offset 1: level {parameters[1]} does not match the requested level {level}.");
        }

        int layers = BinaryPrimitives.ReadUInt16LittleEndian(parameters[2..]);
        uint tokens = BinaryPrimitives.ReadUInt32LittleEndian(parameters[4..]);
        uint channels = BinaryPrimitives.ReadUInt32LittleEndian(parameters[8..]);
        if (layers != shape.Layers || tokens != (uint)shape.Tokens || channels != (uint)shape.Channels)
        {
            throw new InvalidKvDataException($"{codec}: parameters offset 2: layers/tokens/channels {layers}/{tokens}/{channels} do not match {shape} ({shape.Layers}/{shape.Tokens}/{shape.Channels}).");
        }
    }

    /// <summary>A plane's name in messages.</summary>
    public static string PlaneName(int plane) => $"layer {plane >> 1} {((plane & 1) == 0 ? 'K' : 'V')}";
}
