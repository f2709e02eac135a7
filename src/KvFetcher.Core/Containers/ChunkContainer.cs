using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.Security.Cryptography;
using KvFetcher.Core.Keys;

namespace KvFetcher.Core.Containers;

/// <summary>
/// The on-disk and on-wire form of one encoded KV chunk. Little-endian, 64-bit lengths:
/// <code>
/// offset size  field
///      0    8  magic "KVFCHUNK"
///      8    2  version (1, or 2: layer-addressable, below)
///     10    1  codec id            11  1  quality level
///     12    1  dtype               13  1  flags: bit 0 = authenticated (others zero)
///     14    2  reserved, zero
///     16   32  chunk key (SHA-256)
///     48   32  model fingerprint (SHA-256)
///     80    8  token start         88  8  token count
///     96    4  layers             100  4  KV heads
///    104    4  head dim           108  4  version 1: reserved, zero; version 2: layers per group G (1..layers)
///    112    8  parameters length  120  8  payload length
///    128    …  version 2 only: the layer table (<see cref="ChunkLayerTable"/>, 24 + 16 x ceil(layers / G) bytes)
///      …    …  codec parameters, then payload
///      …   32  authenticated only: HMAC-SHA256 under the tenant's <see cref="ChunkMacKey"/> of every byte before it
///    end    8  XxHash3-64 of every byte before it
/// </code>
/// Reading checks the structure and the checksum, then every identity field against what the caller expects, and
/// raises <see cref="InvalidKvDataException"/> naming the field, its offset and value on any difference. A container
/// therefore can never be restored into the wrong position, model or tenant (the tenant is part of the key). The
/// checksum catches accidents only (anyone can recompute it); a reader that expects a MAC key
/// (<see cref="ChunkExpectation.Mac"/>) also refuses any container whose tag is missing or does not verify, which
/// is what makes a store that others can write to safe to read from.
/// <para>
/// Version 2 makes a layer range readable without the rest (<see cref="ChunkLayerTable"/>): its table says where each
/// group of G layers lies in the payload, with a checksum per group and one over the header and the table, so a reader
/// can fetch the header and table, then only the groups it needs, and verify both. Version 1 containers read as before.
/// </para>
/// </summary>
public static partial class ChunkContainer
{
    /// <summary>The version of a container without a layer table.</summary>
    public const ushort Version = 1;

    /// <summary>The version of a layer-addressable container (<see cref="WriteLayered"/>).</summary>
    public const ushort LayeredVersion = 2;
    public const int HeaderSize = 128;
    public const int ChecksumSize = 8;

    /// <summary>The fewest bytes any container has: a header and a checksum.</summary>
    public const int MinSize = HeaderSize + ChecksumSize;

    /// <summary>Flag bit of byte 13: a MAC tag follows the payload.</summary>
    public const byte AuthenticatedFlag = 1;

    private static ReadOnlySpan<byte> Magic => "KVFCHUNK"u8;

    /// <summary>Bytes of a container holding <paramref name="parametersLength"/> + <paramref name="payloadLength"/>.</summary>
    public static long GetSize(long parametersLength, long payloadLength, bool authenticated = false) =>
        HeaderSize + parametersLength + payloadLength + (authenticated ? ChunkMacKey.TagSize : 0) + ChecksumSize;

    /// <summary>
    /// Writes a layer-addressable container (version 2): as <see cref="Write(in ChunkHeader, ReadOnlySpan{byte}, ReadOnlySpan{byte}, IBufferWriter{byte}, ChunkMacKey?)"/>
    /// with a layer table after the header. The payload must be <paramref name="prefixLength"/> bytes shared by every
    /// layer (at most <see cref="ChunkLayerTable.MaxPrefix"/>), then each layer's bytes in order, layer l ending at
    /// payload offset <paramref name="layerEnds"/>[l] (what a layer-addressable codec reports); layers are grouped
    /// <paramref name="groupLayers"/> at a time, the unit a reader fetches and verifies.
    /// </summary>
    public static void WriteLayered(in ChunkHeader header, ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, int prefixLength, ReadOnlySpan<long> layerEnds,
        int groupLayers, IBufferWriter<byte> output, ChunkMacKey? mac = null)
    {
        header.Shape.Validate();
        ArgumentOutOfRangeException.ThrowIfLessThan(groupLayers, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(groupLayers, header.Shape.Layers);
        ArgumentOutOfRangeException.ThrowIfNegative(prefixLength);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(prefixLength, Math.Min(ChunkLayerTable.MaxPrefix, payload.Length));
        if (layerEnds.Length != header.Shape.Layers)
        {
            throw new ArgumentException($"{layerEnds.Length} layer ends given for {header.Shape.Layers} layers.", nameof(layerEnds));
        }

        long previous = prefixLength;
        foreach (long end in layerEnds)
        {
            if (end < previous)
            {
                throw new ArgumentException($"Layer ends must not decrease and start at the prefix ({prefixLength}); found {end} after {previous}.", nameof(layerEnds));
            }

            previous = end;
        }

        if (previous != payload.Length)
        {
            throw new ArgumentException($"The last layer ends at {previous}; the payload is {payload.Length} bytes.", nameof(layerEnds));
        }

        Write(header, parameters, payload, output, mac, new LayerLayout(groupLayers, prefixLength, layerEnds));
    }

    /// <summary>Writes a container; with <paramref name="mac"/>, sealed with the tenant's MAC tag.</summary>
    public static void Write(in ChunkHeader header, ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, IBufferWriter<byte> output, ChunkMacKey? mac = null) =>
        Write(header, parameters, payload, output, mac, layout: default);

    private static void Write(in ChunkHeader header, ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, IBufferWriter<byte> output, ChunkMacKey? mac, in LayerLayout layout)
    {
        header.Shape.Validate();
        bool layered = layout.GroupLayers > 0;
        int tableSize = layered ? ChunkLayerTable.SizeOf(header.Shape.Layers, layout.GroupLayers) : 0;
        ArgumentOutOfRangeException.ThrowIfNegative(header.TokenStart);
        var checksum = new XxHash3();
        Span<byte> whole = output.GetSpan(HeaderSize + tableSize)[..(HeaderSize + tableSize)];
        Span<byte> head = whole[..HeaderSize];
        head.Clear();
        Magic.CopyTo(head);
        BinaryPrimitives.WriteUInt16LittleEndian(head[8..], layered ? LayeredVersion : Version);
        head[10] = (byte)header.Codec;
        head[11] = header.Level;
        head[12] = (byte)header.DType;
        head[13] = mac is null ? (byte)0 : AuthenticatedFlag;
        header.Key.Value.Write(head[16..]);
        header.Model.Value.Write(head[48..]);
        BinaryPrimitives.WriteInt64LittleEndian(head[80..], header.TokenStart);
        BinaryPrimitives.WriteInt64LittleEndian(head[88..], header.Shape.Tokens);
        BinaryPrimitives.WriteInt32LittleEndian(head[96..], header.Shape.Layers);
        BinaryPrimitives.WriteInt32LittleEndian(head[100..], header.Shape.KvHeads);
        BinaryPrimitives.WriteInt32LittleEndian(head[104..], header.Shape.HeadDim);
        BinaryPrimitives.WriteInt32LittleEndian(head[108..], layout.GroupLayers);
        BinaryPrimitives.WriteInt64LittleEndian(head[112..], parameters.Length);
        BinaryPrimitives.WriteInt64LittleEndian(head[120..], payload.Length);
        checksum.Append(head);
        using IncrementalHash? hmac = mac?.CreateHmac();
        hmac?.AppendData(head);
        if (layered)
        {
            // The table's own head checksum covers the header and the table.
            ChunkLayerTable.Write(header.Shape.Layers, layout, payload, whole);
            checksum.Append(whole[HeaderSize..]);
            hmac?.AppendData(whole[HeaderSize..]);
            output.Advance(HeaderSize + tableSize);
        }
        else
        {
            output.Advance(HeaderSize);
        }
        checksum.Append(parameters);
        checksum.Append(payload);
        output.Write(parameters);
        output.Write(payload);
        if (hmac is not null)
        {
            hmac.AppendData(parameters);
            hmac.AppendData(payload);
            Span<byte> tag = output.GetSpan(ChunkMacKey.TagSize)[..ChunkMacKey.TagSize];
            hmac.GetHashAndReset(tag);
            checksum.Append(tag);
            output.Advance(ChunkMacKey.TagSize);
        }

        Span<byte> tail = output.GetSpan(ChecksumSize)[..ChecksumSize];
        BinaryPrimitives.WriteUInt64LittleEndian(tail, checksum.GetCurrentHashAsUInt64());
        output.Advance(ChecksumSize);
    }

    /// <summary>
    /// Checks a whole container's structure and checksum and returns its header and the spans of its parameters and
    /// payload (slices of <paramref name="container"/>).
    /// </summary>
    public static ChunkHeader Read(ReadOnlySpan<byte> container, out ReadOnlySpan<byte> parameters, out ReadOnlySpan<byte> payload)
    {
        CheckStructure(container, container.Length, out int tagSize, out int tableSize, out long parametersLength, out long payloadLength);
        int bodyEnd = container.Length - ChecksumSize;
        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(container[bodyEnd..]);
        ulong actual = XxHash3.HashToUInt64(container[..bodyEnd]);
        if (stored != actual)
        {
            throw Invalid("checksum", bodyEnd, $"{stored:x16}", $"the content hashes to {actual:x16} (corrupt)");
        }

        ChunkHeader header = ReadFields(container, tagSize);
        int parametersStart = HeaderSize + tableSize;
        parameters = container.Slice(parametersStart, (int)parametersLength);
        payload = container.Slice(parametersStart + (int)parametersLength, (int)payloadLength);
        if (tableSize > 0)
        {
            // The whole checksum held, but the table must still describe this payload: a reader of a layer range trusts it.
            ChunkLayerTable.Parse(container[..parametersStart], header, parametersLength, payloadLength).CheckWhole(payload);
        }

        return header;
    }

    /// <summary>
    /// Checks everything a container's first <see cref="HeaderSize"/> bytes say, for a container of
    /// <paramref name="length"/> bytes, and returns its header: all of <see cref="Read(ReadOnlySpan{byte}, out ReadOnlySpan{byte}, out ReadOnlySpan{byte})"/>'s
    /// checks but the checksum, which needs every byte (<see cref="ContainerStreamCheck"/> takes it as the bytes pass).
    /// </summary>
    /// <exception cref="InvalidKvDataException">The header is malformed or does not fit the length.</exception>
    public static ChunkHeader ReadHeader(ReadOnlySpan<byte> head, long length)
    {
        if (head.Length < HeaderSize)
        {
            throw Invalid("length", 0, head.Length, $"a header is {HeaderSize} bytes");
        }

        CheckStructure(head, length, out int tagSize, out _, out _, out _);
        return ReadFields(head, tagSize);
    }

    /// <summary>The checks before the checksum: size, magic, version, flags and lengths against the container's length.</summary>
    private static void CheckStructure(ReadOnlySpan<byte> container, long length, out int tagSize, out int tableSize, out long parametersLength, out long payloadLength)
    {
        CheckLength(length);

        if (!container[..8].SequenceEqual(Magic))
        {
            throw Invalid("magic", 0, Convert.ToHexString(container[..8]), "expected \"KVFCHUNK\"");
        }

        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(container[8..]);
        if (version is not (Version or LayeredVersion))
        {
            throw Invalid("version", 8, version, $"this reader knows versions {Version} and {LayeredVersion}");
        }

        tableSize = 0;
        if (version == LayeredVersion)
        {
            int layers = BinaryPrimitives.ReadInt32LittleEndian(container[96..]);
            CheckRange("layers", 96, layers, 1, 4096);
            int groupLayers = BinaryPrimitives.ReadInt32LittleEndian(container[108..]);
            CheckRange("layers per group", 108, groupLayers, 1, layers);
            tableSize = ChunkLayerTable.SizeOf(layers, groupLayers);
        }

        byte flags = container[13];
        if ((flags & ~AuthenticatedFlag) != 0)
        {
            throw Invalid("flags", 13, flags, "unknown flag bits");
        }

        tagSize = (flags & AuthenticatedFlag) != 0 ? ChunkMacKey.TagSize : 0;
        parametersLength = BinaryPrimitives.ReadInt64LittleEndian(container[112..]);
        payloadLength = BinaryPrimitives.ReadInt64LittleEndian(container[120..]);
        long available = length - HeaderSize - tableSize - ChecksumSize - tagSize;
        if (available < 0)
        {
            throw Invalid("length", 0, length, $"a version {version} container of these layers is at least {MinSize + tableSize + tagSize} bytes");
        }

        if (parametersLength < 0 || parametersLength > available)
        {
            throw Invalid("parameters length", 112, parametersLength, $"{available} bytes follow the header{(tableSize > 0 ? " and layer table" : "")}");
        }

        if (payloadLength < 0 || payloadLength != available - parametersLength)
        {
            throw Invalid("payload length", 120, payloadLength, $"the container holds {available - parametersLength} payload bytes (truncated or extended)");
        }
    }

    /// <summary>The header's fields once its structure holds: each must still be sane on its own and together.</summary>
    private static ChunkHeader ReadFields(ReadOnlySpan<byte> container, int tagSize)
    {
        // The structure holds (and, when read whole, the checksum): the remaining fields must still be sane.
        bool layered = BinaryPrimitives.ReadUInt16LittleEndian(container[8..]) == LayeredVersion;
        if (container[14] != 0 || container[15] != 0 || (!layered && BinaryPrimitives.ReadInt32LittleEndian(container[108..]) != 0))
        {
            throw Invalid("reserved", 14, "non-zero", "reserved bytes must be zero");
        }

        byte codec = container[10];
        if (!Enum.IsDefined((CodecId)codec))
        {
            throw Invalid("codec id", 10, codec, "unknown codec");
        }

        byte dtype = container[12];
        if (!Enum.IsDefined((DType)dtype))
        {
            throw Invalid("dtype", 12, dtype, "unknown element type");
        }

        long tokenStart = BinaryPrimitives.ReadInt64LittleEndian(container[80..]);
        long tokens = BinaryPrimitives.ReadInt64LittleEndian(container[88..]);
        int layers = BinaryPrimitives.ReadInt32LittleEndian(container[96..]);
        int heads = BinaryPrimitives.ReadInt32LittleEndian(container[100..]);
        int headDim = BinaryPrimitives.ReadInt32LittleEndian(container[104..]);
        CheckRange("token start", 80, tokenStart, 0, int.MaxValue);
        CheckRange("token count", 88, tokens, 1, int.MaxValue);
        CheckRange("layers", 96, layers, 1, 4096);
        CheckRange("KV heads", 100, heads, 1, 4096);
        CheckRange("head dim", 104, headDim, 1, 4096);

        // Each field is in range, but together they may still promise more than a reader can hold: the chunk's
        // decoded KV must fit one buffer (a reader sizes one from the header), and its positions must stay within int.
        long tokenBytes = (long)layers * 2 * heads * headDim * ((DType)dtype).SizeOf();
        long maxTokens = Array.MaxLength / tokenBytes;
        if (tokens > maxTokens)
        {
            throw Invalid("token count", 88, tokens,
                $"a token of {layers} layers x {heads} KV heads x {headDim} head dim is {tokenBytes} bytes of KV, so at most {maxTokens} tokens fit one buffer");
        }

        if (tokenStart + tokens > int.MaxValue)
        {
            throw Invalid("token start", 80, tokenStart, $"with {tokens} tokens the chunk would end past position {int.MaxValue}");
        }

        return new ChunkHeader
        {
            Codec = (CodecId)codec,
            Level = container[11],
            DType = (DType)dtype,
            Key = new ChunkKey(Hash256.Read(container[16..])),
            Model = new ModelFingerprint(Hash256.Read(container[48..])),
            TokenStart = tokenStart,
            Shape = new KvShape(layers, (int)tokens, heads, headDim),
            Authenticated = tagSize != 0,
            LayerGroup = layered ? BinaryPrimitives.ReadInt32LittleEndian(container[108..]) : 0,
        };
    }

    /// <summary>
    /// Whether <paramref name="container"/> is a well-formed container whose checksum holds (what a store verifies
    /// before it accepts or hands out an object). Does not check identity; <see cref="Read(ReadOnlySpan{byte}, in ChunkExpectation, out ReadOnlySpan{byte}, out ReadOnlySpan{byte})"/> does.
    /// </summary>
    public static bool IsIntact(ReadOnlySpan<byte> container)
    {
        try
        {
            Read(container, out _, out _);
            return true;
        }
        catch (InvalidKvDataException)
        {
            return false;
        }
    }

    /// <summary>
    /// <see cref="Read(ReadOnlySpan{byte}, out ReadOnlySpan{byte}, out ReadOnlySpan{byte})"/>, then refuses the
    /// container unless its MAC tag verifies under <see cref="ChunkExpectation.Mac"/> (when the reader has one) and
    /// key, model, position, shape and dtype are the expected ones.
    /// </summary>
    public static ChunkHeader Read(ReadOnlySpan<byte> container, in ChunkExpectation expected, out ReadOnlySpan<byte> parameters, out ReadOnlySpan<byte> payload)
    {
        ChunkHeader header = Read(container, out parameters, out payload);
        if (expected.Mac is { } mac)
        {
            int tagOffset = container.Length - ChecksumSize - ChunkMacKey.TagSize;
            if (!header.Authenticated)
            {
                throw new ChunkAuthenticationException("KV chunk container: flags at offset 13 is 0: the reader requires authenticated chunks and this one has no MAC tag.");
            }

            if (!mac.Verify(container[..tagOffset], container.Slice(tagOffset, ChunkMacKey.TagSize)))
            {
                throw new ChunkAuthenticationException($"KV chunk container: MAC tag at offset {tagOffset} does not verify: not written under this deployment's secret for this tenant (forged or foreign).");
            }
        }

        CheckIdentity(header, expected);
        return header;
    }

    /// <summary>Refuses a header whose key, model, position, shape or dtype is not the expected one.</summary>
    internal static void CheckIdentity(in ChunkHeader header, in ChunkExpectation expected)
    {
        if (header.Key != expected.Key)
        {
            throw Invalid("chunk key", 16, header.Key, $"expected {expected.Key} (another context, position or tenant)");
        }

        if (header.Model != expected.Model)
        {
            throw Invalid("model fingerprint", 48, header.Model, $"expected {expected.Model} (KV of another model)");
        }

        if (header.TokenStart != expected.TokenStart)
        {
            throw Invalid("token start", 80, header.TokenStart, $"expected {expected.TokenStart}");
        }

        if (header.Shape != expected.Shape)
        {
            throw Invalid("shape", 88, header.Shape, $"expected {expected.Shape}");
        }

        if (header.DType != expected.DType)
        {
            throw Invalid("dtype", 12, header.DType.ToShortName(), $"expected {expected.DType.ToShortName()}");
        }
    }

    internal static void CheckRange(string field, int offset, long value, long min, long max)
    {
        if (value < min || value > max)
        {
            throw Invalid(field, offset, value, $"must be in [{min}, {max}]");
        }
    }

    /// <summary>Refuses a container length below <see cref="MinSize"/>.</summary>
    internal static void CheckLength(long length)
    {
        if (length < MinSize)
        {
            throw Invalid("length", 0, length, $"a container is at least {MinSize} bytes");
        }
    }

    internal static InvalidKvDataException Invalid(string field, int offset, object value, string why) =>
        new($"KV chunk container: {field} at offset {offset} is {value}: {why}.");

    /// <summary>Where a layer-addressable payload's layers lie: the shared prefix and each layer's end, grouped.</summary>
    internal readonly ref struct LayerLayout(int groupLayers, int prefixLength, ReadOnlySpan<long> layerEnds)
    {
        /// <summary>Layers per group; 0: no layer table (version 1).</summary>
        public int GroupLayers { get; } = groupLayers;

        public int PrefixLength { get; } = prefixLength;

        public ReadOnlySpan<long> LayerEnds { get; } = layerEnds;
    }
}
