using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using KvFetcher.Core;
using KvFetcher.Core.Keys;

namespace KvFetcher.Codecs.Transform;

/// <summary>
/// The per-model decorrelating transform of the <c>kvtc</c> codec, calibrated once per model (<see cref="KvtcFitter"/>)
/// and bound to its fingerprint. Layers are taken in groups of <see cref="GroupLayers"/> neighbours (the last group
/// smaller when the layers do not divide); a block is the keys or the values of one group, its channels the
/// concatenated channels (kvHeads * headDim) of the group's layers. Per block: the channels' mean, and per component an
/// analysis vector (forward row), a synthesis vector (inverse row) and the component's standard deviation; per level,
/// the bits given to each component (0 = dropped) and the quantization step that follows (<c>sigma * 2^(2 - bits)</c>).
/// The fitter takes the components as the principal axes of the block's covariance in the metric of the model's
/// measured sensitivity (so forward and inverse are not transposes of each other). Keys are transformed before their
/// rotary embedding: the transform records the model's key rotation (<see cref="KeyRotation"/>), the codec takes it off
/// each key at the token's position before the transform and puts it back after the inverse, and the fitter fits the
/// keys so un-rotated (<see cref="KvtcKeyRotation.None"/> codes keys as stored).
/// </summary>
/// <remarks>
/// File format (<see cref="FileName"/> next to the model; little-endian; one definition, <see cref="Write"/> and
/// <see cref="Read"/>):
/// <code>
/// 0   u8[4]   magic "KVTC"
/// 4   u16     format version (3; version 2 held one transform per layer and version 1 keys after RoPE: both refused)
/// 6   u16     layers
/// 8   u16     kvHeads
/// 10  u16     headDim
/// 12  u8[32]  model fingerprint (SHA-256)
/// 44  u16     exact head tokens per chunk (attention sinks)
/// 46  u16     exact tail tokens per chunk
/// 48  u8      levels (<see cref="LevelCount"/>)
/// 49  u8      key pairing (<see cref="KvtcKeyPairing"/>: 0 none, 1 half-split, 2 interleaved)
/// 50  u16     group layers G (1..layers; G * kvHeads * headDim at most <see cref="MaxChannels"/>)
/// 52  f32[levels]                 nominal bits per element of each level
/// ..  f32[headDim / 2]            key inverse frequencies (finite and positive; all zero for pairing 0)
/// ..  per block b = group * 2 + kind (group g: layers g * G .. min(layers, (g + 1) * G) - 1; D = its layers * C,
///     channel index = layer in group * C + channel): f32 mean[D], f32 sigma[D], f32 forward[D][D] (row k: component k's
///     analysis vector), f32 inverse[D][D] (row k: its synthesis vector)
/// ..  per level, per block: u8 bits[D] (0..<see cref="MaxBits"/>)
/// ..  u8[16]  XXH128 of everything before: the transform's id, which every kvtc chunk names
/// </code>
/// </remarks>
public sealed class KvtcTransform
{
    /// <summary>The file's name in a model directory.</summary>
    public const string FileName = "kvfetcher-kvtc.bin";

    /// <summary>Levels every transform holds (the codec's levels 0..7, most bits first).</summary>
    public const int LevelCount = 8;

    /// <summary>Most bits a component gets: its step is then sigma / 32, and +-127 steps cover +-4 sigma.</summary>
    public const int MaxBits = 7;

    /// <summary>Most channels per block a transform may have (Llama-3-8B's 8 x 128 for one layer; its matrices are 4 MiB each per block).</summary>
    public const int MaxChannels = 1024;

    /// <summary>The bytes of a transform's id.</summary>
    public const int IdSize = 16;

    /// <summary>
    /// Nominal bits per element of levels 0..7 (what the allocation spends; the entropy coder's rate is close): a ladder
    /// dense enough near the accuracy floors that calibration can pick the smallest level that passes (5 bits measured no
    /// better than 4.5 on kvf-code-32l and made way for 2.25).
    /// </summary>
    public static IReadOnlyList<float> DefaultLevelBits { get; } = [4.5f, 4f, 3.5f, 3f, 2.75f, 2.5f, 2.25f, 2f];

    private const int FormatVersion = 3;
    private const int FixedHeader = 52;
    private static ReadOnlySpan<byte> Magic => "KVTC"u8;

    private readonly float[] _mean;
    private readonly float[] _sigma;
    private readonly float[] _forward;
    private readonly float[] _inverse;
    private readonly int[] _blockStart;
    private readonly long[] _matrixStart;
    private readonly byte[] _bits;
    private readonly float[] _steps;
    private readonly float[] _levelBits;
    private readonly byte[] _id;
    private readonly int[]?[] _widthCounts = new int[LevelCount][];

    internal KvtcTransform(ModelFingerprint model, int layers, int kvHeads, int headDim, int groupLayers, int exactHead, int exactTail, KvtcKeyRotation keyRotation,
        float[] levelBits, float[] mean, float[] sigma, float[] forward, float[] inverse, byte[] bits)
    {
        if (groupLayers < 1 || groupLayers > layers || (long)groupLayers * kvHeads * headDim > MaxChannels)
        {
            throw new ArgumentException($"kvtc: groups of {groupLayers} layers do not fit {layers} layers of {kvHeads * headDim} channels (at most {MaxChannels} per group).", nameof(groupLayers));
        }

        if (!keyRotation.Fits(headDim))
        {
            throw new ArgumentException($"kvtc: a key rotation of {keyRotation.InverseFrequencies.Length} pairs does not fit heads of {headDim} channels.", nameof(keyRotation));
        }

        Model = model;
        KeyRotation = keyRotation;
        Layers = layers;
        KvHeads = kvHeads;
        HeadDim = headDim;
        ExactHead = exactHead;
        ExactTail = exactTail;
        GroupLayers = groupLayers;
        _levelBits = levelBits;
        _mean = mean;
        _sigma = sigma;
        _forward = forward;
        _inverse = inverse;
        _bits = bits;
        _blockStart = new int[Blocks + 1];
        _matrixStart = new long[Blocks + 1];
        for (int b = 0; b < Blocks; b++)
        {
            int d = BlockChannels(b);
            _blockStart[b + 1] = _blockStart[b] + d;
            _matrixStart[b + 1] = _matrixStart[b] + ((long)d * d);
        }

        int values = Planes * Channels;
        if (mean.Length != values || sigma.Length != values || bits.Length != LevelCount * values || forward.Length != _matrixStart[Blocks] || inverse.Length != _matrixStart[Blocks])
        {
            throw new ArgumentException("kvtc: the transform's arrays do not match its layers, channels and groups.", nameof(mean));
        }

        _steps = new float[LevelCount * values];
        for (int i = 0; i < _steps.Length; i++)
        {
            int b = _bits[i];
            _steps[i] = b == 0 ? 0f : _sigma[i % values] * MathF.ScaleB(1f, 2 - b);
        }

        byte[] content = Serialize(withId: false);
        _id = XxHash128.Hash(content);
    }

    /// <summary>The model whose KV this transform was fitted to.</summary>
    public ModelFingerprint Model { get; }

    public int Layers { get; }

    public int KvHeads { get; }

    public int HeadDim { get; }

    /// <summary>Channels per plane (kvHeads * headDim).</summary>
    public int Channels => KvHeads * HeadDim;

    /// <summary>Planes: K and V of every layer.</summary>
    public int Planes => Layers * 2;

    /// <summary>Neighbouring layers transformed together (the last group holds the rest when they do not divide).</summary>
    public int GroupLayers { get; }

    /// <summary>Blocks: K and V of every group of layers (block = group * 2 + kind).</summary>
    public int Blocks => ((Layers + GroupLayers - 1) / GroupLayers) * 2;

    /// <summary>The first layer of block <paramref name="block"/>'s group.</summary>
    public int BlockFirstLayer(int block) => (block >> 1) * GroupLayers;

    /// <summary>The layers of block <paramref name="block"/>'s group.</summary>
    public int BlockLayers(int block) => Math.Min(GroupLayers, Layers - BlockFirstLayer(block));

    /// <summary>The channels (components) of block <paramref name="block"/>: its layers times <see cref="Channels"/>.</summary>
    public int BlockChannels(int block) => BlockLayers(block) * Channels;

    /// <summary>Tokens at the start of every chunk stored exactly (attention sinks in a context's first chunk).</summary>
    public int ExactHead { get; }

    /// <summary>Tokens at the end of every chunk stored exactly.</summary>
    public int ExactTail { get; }

    /// <summary>The model's key rotation, taken off keys before the transform (<see cref="KvtcKeyRotation.None"/>: keys coded as stored).</summary>
    public KvtcKeyRotation KeyRotation { get; }

    /// <summary>The transform's id (XXH128 of its content, model fingerprint included): a chunk names the transform it was coded with.</summary>
    public ReadOnlySpan<byte> Id => _id;

    /// <summary>The id in hex, for messages.</summary>
    public string IdText => Convert.ToHexStringLower(_id);

    /// <summary>Nominal bits per element of <paramref name="level"/>.</summary>
    public float LevelBits(int level) => _levelBits[level];

    /// <summary>Whether this transform fits chunks of <paramref name="shape"/> (layers and channels; any token count).</summary>
    public bool Fits(KvShape shape) => shape.Layers == Layers && shape.KvHeads == KvHeads && shape.HeadDim == HeadDim;

    /// <summary>Block <paramref name="block"/>'s channel means (<see cref="BlockChannels"/> values).</summary>
    public ReadOnlySpan<float> Mean(int block) => _mean.AsSpan(_blockStart[block], BlockChannels(block));

    internal ReadOnlySpan<float> Sigma(int block) => _sigma.AsSpan(_blockStart[block], BlockChannels(block));

    /// <summary>Component <paramref name="component"/>'s analysis vector in block <paramref name="block"/> (its coefficient is this dotted with the centred channels).</summary>
    internal ReadOnlySpan<float> Forward(int block, int component) => _forward.AsSpan((int)(_matrixStart[block] + ((long)component * BlockChannels(block))), BlockChannels(block));

    /// <summary>Component <paramref name="component"/>'s synthesis vector in block <paramref name="block"/> (the channels are the mean plus coefficient times these).</summary>
    internal ReadOnlySpan<float> Inverse(int block, int component) => _inverse.AsSpan((int)(_matrixStart[block] + ((long)component * BlockChannels(block))), BlockChannels(block));

    /// <summary>
    /// Block <paramref name="block"/>'s synthesis matrix, row-major [components][channels] (row k: component k's
    /// synthesis vector): the channels are the mean plus the coefficients times this.
    /// </summary>
    public ReadOnlySpan<float> InverseMatrix(int block) => _inverse.AsSpan((int)_matrixStart[block], BlockChannels(block) * BlockChannels(block));

    /// <summary>Where block <paramref name="block"/>'s channels start among all blocks' channels (blocks in order).</summary>
    public int BlockChannelStart(int block) => _blockStart[block];

    /// <summary>The bits <paramref name="level"/> gives each of block <paramref name="block"/>'s components (0: dropped).</summary>
    public ReadOnlySpan<byte> Bits(int level, int block) => _bits.AsSpan((level * Planes * Channels) + _blockStart[block], BlockChannels(block));

    /// <summary>The quantization step of each of block <paramref name="block"/>'s components at <paramref name="level"/> (0 for dropped ones).</summary>
    public ReadOnlySpan<float> Steps(int level, int block) => _steps.AsSpan((level * Planes * Channels) + _blockStart[block], BlockChannels(block));

    /// <summary>
    /// How many of each block's components <paramref name="level"/> gives each bit width: entry
    /// <c>bits * Blocks + block</c> for bits 0..<see cref="MaxBits"/> (computed once per level).
    /// </summary>
    internal ReadOnlySpan<int> WidthCounts(int level)
    {
        int[]? counts = Volatile.Read(ref _widthCounts[level]);
        if (counts is null)
        {
            counts = new int[(MaxBits + 1) * Blocks];
            for (int block = 0; block < Blocks; block++)
            {
                foreach (byte b in Bits(level, block))
                {
                    counts[(b * Blocks) + block]++;
                }
            }

            Volatile.Write(ref _widthCounts[level], counts);
        }

        return counts;
    }

    /// <summary>The share of the (sensitivity-weighted) variance each level keeps (1 - modelled distortion / variance), for reports.</summary>
    public double KeptVariance(int level)
    {
        double total = 0, lost = 0;
        for (int i = 0; i < _sigma.Length; i++)
        {
            double variance = (double)_sigma[i] * _sigma[i];
            total += variance;
            lost += variance * KvtcAllocation.Distortion(_bits[(level * _sigma.Length) + i]);
        }

        return total == 0 ? 1 : 1 - (lost / total);
    }

    /// <summary>The transform's path in <paramref name="modelDirectory"/>.</summary>
    public static string PathIn(string modelDirectory) => System.IO.Path.Combine(modelDirectory, FileName);

    /// <summary>Writes the transform to <paramref name="path"/> atomically (a temporary file, then a rename).</summary>
    public void Save(string path)
    {
        string temporary = path + ".tmp";
        File.WriteAllBytes(temporary, Serialize(withId: true));
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>The file's bytes.</summary>
    public byte[] Write() => Serialize(withId: true);

    /// <summary>
    /// The transform next to <paramref name="modelDirectory"/> if there is one, it reads cleanly and it was fitted to the
    /// model with <paramref name="fingerprint"/>; otherwise null and <paramref name="problem"/> says why (missing,
    /// unreadable, or stale: fitted to another model). A stale transform is never returned.
    /// </summary>
    public static KvtcTransform? TryLoadFrom(string modelDirectory, ModelFingerprint fingerprint, out string? problem)
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        string path = PathIn(modelDirectory);
        if (!File.Exists(path))
        {
            problem = $"no kvtc transform ({path} is missing; run kvfetch calibrate --model {modelDirectory})";
            return null;
        }

        KvtcTransform transform;
        try
        {
            transform = Read(File.ReadAllBytes(path));
        }
        catch (Exception ex) when (ex is InvalidDataException or IOException or UnauthorizedAccessException)
        {
            problem = $"kvtc transform unusable ({path}: {ex.Message})";
            return null;
        }

        if (transform.Model != fingerprint)
        {
            problem = $"kvtc transform is stale (fitted to model {transform.Model.ToString()[..12]}, this model is {fingerprint.ToString()[..12]}): run kvfetch calibrate again";
            return null;
        }

        problem = null;
        return transform;
    }

    /// <summary>Reads a transform file's bytes; anything malformed throws <see cref="InvalidDataException"/> naming the field.</summary>
    public static KvtcTransform Read(ReadOnlySpan<byte> file)
    {
        if (file.Length < FixedHeader + IdSize || !file[..4].SequenceEqual(Magic))
        {
            throw new InvalidDataException($"not a kvtc transform: {file.Length} bytes without the \"KVTC\" magic and header.");
        }

        ReadOnlySpan<byte> content = file[..^IdSize];
        if (!XxHash128.Hash(content).AsSpan().SequenceEqual(file[^IdSize..]))
        {
            throw new InvalidDataException("kvtc transform: checksum (last 16 bytes) does not match the content.");
        }

        int version = BinaryPrimitives.ReadUInt16LittleEndian(file[4..]);
        int layers = BinaryPrimitives.ReadUInt16LittleEndian(file[6..]);
        int kvHeads = BinaryPrimitives.ReadUInt16LittleEndian(file[8..]);
        int headDim = BinaryPrimitives.ReadUInt16LittleEndian(file[10..]);
        var model = new ModelFingerprint(Hash256.Read(file[12..]));
        int exactHead = BinaryPrimitives.ReadUInt16LittleEndian(file[44..]);
        int exactTail = BinaryPrimitives.ReadUInt16LittleEndian(file[46..]);
        int levels = file[48];
        var pairing = (KvtcKeyPairing)file[49];
        if (version != FormatVersion)
        {
            throw new InvalidDataException($"kvtc transform: offset 4: format version {version} is not {FormatVersion}{version switch
            {
                1 => " (version 1 coded keys after RoPE; recalibrate: fit the transform again with kvfetch calibrate)",
                2 => " (version 2 held one transform per layer; recalibrate: fit the transform again with kvfetch calibrate)",
                _ => "",
            }}.");
        }

        if (!Enum.IsDefined(pairing))
        {
            throw new InvalidDataException($"kvtc transform: offset 49: key pairing {file[49]} is not 0 (none), 1 (half-split) or 2 (interleaved).");
        }

        long channels = (long)kvHeads * headDim;
        if (layers == 0 || channels == 0 || channels > MaxChannels)
        {
            throw new InvalidDataException($"kvtc transform: offset 6: layers/kvHeads/headDim {layers}/{kvHeads}/{headDim}; channels must be 1..{MaxChannels}.");
        }

        int groupLayers = BinaryPrimitives.ReadUInt16LittleEndian(file[50..]);
        if (groupLayers < 1 || groupLayers > layers || groupLayers * channels > MaxChannels)
        {
            throw new InvalidDataException($"kvtc transform: offset 50: groups of {groupLayers} layers; 1..{layers} layers of {channels} channels, at most {MaxChannels} channels per group.");
        }

        if (levels != LevelCount)
        {
            throw new InvalidDataException($"kvtc transform: offset 48: {levels} levels; this build reads {LevelCount}.");
        }

        if (pairing != KvtcKeyPairing.None && headDim % 2 != 0)
        {
            throw new InvalidDataException($"kvtc transform: offset 10: head dimension {headDim} is odd; key pairs (offset 49: pairing {file[49]}) need an even one.");
        }

        int c = (int)channels;
        int planes = layers * 2;
        long expected = FileLength(layers, c, groupLayers, headDim) + IdSize;
        if (expected > int.MaxValue)
        {
            throw new InvalidDataException($"kvtc transform: layers {layers} x {c} channels need {expected} bytes; at most {int.MaxValue} are read.");
        }

        if (file.Length != expected)
        {
            throw new InvalidDataException($"kvtc transform: {file.Length} bytes; layers {layers} x {c} channels need {expected}.");
        }

        int position = FixedHeader;
        float[] levelBits = ReadFloats(file, ref position, levels, "level bits");
        for (int level = 0; level < levels; level++)
        {
            if (!(levelBits[level] > 0 && levelBits[level] <= MaxBits))
            {
                throw new InvalidDataException($"kvtc transform: offset {FixedHeader + (4 * level)}: level {level} has {levelBits[level]} nominal bits per value; (0, {MaxBits}] are allowed.");
            }
        }

        int frequenciesAt = position;
        float[] frequencies = ReadFloats(file, ref position, headDim / 2, "key inverse frequency");
        KvtcKeyRotation keyRotation;
        if (pairing == KvtcKeyPairing.None)
        {
            if (frequencies.Any(f => f != 0))
            {
                throw new InvalidDataException($"kvtc transform: offset {frequenciesAt}: keys coded as stored (pairing 0) have all-zero inverse frequencies.");
            }

            keyRotation = KvtcKeyRotation.None;
        }
        else
        {
            for (int i = 0; i < frequencies.Length; i++)
            {
                if (!(frequencies[i] > 0))
                {
                    throw new InvalidDataException($"kvtc transform: offset {frequenciesAt + (4 * i)}: key inverse frequency {i} is {frequencies[i]}; every one is positive.");
                }
            }

            keyRotation = new KvtcKeyRotation(pairing, frequencies);
        }
        var mean = new float[planes * c];
        var sigma = new float[planes * c];
        long matrices = MatrixElements(layers, c, groupLayers);
        var forward = new float[matrices];
        var inverse = new float[matrices];
        int vectorAt = 0;
        long matrixAt = 0;
        for (int g = 0; g < layers; g += groupLayers)
        {
            int d = Math.Min(groupLayers, layers - g) * c;
            for (int kind = 0; kind < 2; kind++)
            {
                ReadFloats(file, ref position, d, "mean").CopyTo(mean, vectorAt);
                ReadFloats(file, ref position, d, "sigma").CopyTo(sigma, vectorAt);
                ReadFloats(file, ref position, d * d, "forward").CopyTo(forward, matrixAt);
                ReadFloats(file, ref position, d * d, "inverse").CopyTo(inverse, matrixAt);
                vectorAt += d;
                matrixAt += (long)d * d;
            }
        }

        byte[] bits = file.Slice(position, levels * planes * c).ToArray();
        for (int i = 0; i < bits.Length; i++)
        {
            if (bits[i] > MaxBits || (bits[i] > 0 && !(sigma[i % (planes * c)] > 0)))
            {
                throw new InvalidDataException($"kvtc transform: offset {position + i}: {bits[i]} bits for a component of sigma {sigma[i % (planes * c)]}; 0..{MaxBits}, and 0 unless sigma > 0.");
            }
        }

        foreach (float s in sigma)
        {
            if (!float.IsFinite(s) || s < 0)
            {
                throw new InvalidDataException($"kvtc transform: a sigma is {s}; sigmas are finite and non-negative.");
            }
        }

        return new KvtcTransform(model, layers, kvHeads, headDim, groupLayers, exactHead, exactTail, keyRotation, levelBits, mean, sigma, forward, inverse, bits);
    }

    /// <summary>The elements of every block's matrix (forward or inverse) together: two blocks (K, V) per group.</summary>
    private static long MatrixElements(int layers, int channels, int groupLayers)
    {
        long total = 0;
        for (int g = 0; g < layers; g += groupLayers)
        {
            long d = (long)Math.Min(groupLayers, layers - g) * channels;
            total += 2 * d * d;
        }

        return total;
    }

    /// <summary>The file's length without its id.</summary>
    private static long FileLength(int layers, int channels, int groupLayers, int headDim)
        => FixedHeader + (4L * LevelCount) + (4L * (headDim / 2)) + (layers * 2L * 8 * channels) + (8 * MatrixElements(layers, channels, groupLayers))
            + ((long)LevelCount * layers * 2 * channels);

    private static float[] ReadFloats(ReadOnlySpan<byte> file, ref int position, int count, string field)
    {
        var values = new float[count];
        MemoryMarshal.Cast<byte, float>(file.Slice(position, count * 4)).CopyTo(values);
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("kvtc transforms are read on little-endian machines.");
        }

        foreach (float v in values)
        {
            if (!float.IsFinite(v))
            {
                throw new InvalidDataException($"kvtc transform: offset {position}: a {field} value is {v}; every value is finite.");
            }
        }

        position += count * 4;
        return values;
    }

    private byte[] Serialize(bool withId)
    {
        long length = FileLength(Layers, Channels, GroupLayers, HeadDim) + (withId ? IdSize : 0);
        var file = new byte[length];
        Span<byte> span = file;
        Magic.CopyTo(span);
        BinaryPrimitives.WriteUInt16LittleEndian(span[4..], FormatVersion);
        BinaryPrimitives.WriteUInt16LittleEndian(span[6..], (ushort)Layers);
        BinaryPrimitives.WriteUInt16LittleEndian(span[8..], (ushort)KvHeads);
        BinaryPrimitives.WriteUInt16LittleEndian(span[10..], (ushort)HeadDim);
        Model.Value.Write(span[12..]);
        BinaryPrimitives.WriteUInt16LittleEndian(span[44..], (ushort)ExactHead);
        BinaryPrimitives.WriteUInt16LittleEndian(span[46..], (ushort)ExactTail);
        span[48] = LevelCount;
        span[49] = (byte)KeyRotation.Pairing;
        BinaryPrimitives.WriteUInt16LittleEndian(span[50..], (ushort)GroupLayers);
        int position = FixedHeader;
        WriteFloats(span, ref position, _levelBits);
        WriteFloats(span, ref position, KeyRotation.IsNone ? new float[HeadDim / 2] : KeyRotation.InverseFrequencies);
        for (int b = 0; b < Blocks; b++)
        {
            int d = BlockChannels(b);
            WriteFloats(span, ref position, Mean(b));
            WriteFloats(span, ref position, Sigma(b));
            WriteFloats(span, ref position, _forward.AsSpan((int)_matrixStart[b], d * d));
            WriteFloats(span, ref position, _inverse.AsSpan((int)_matrixStart[b], d * d));
        }

        _bits.CopyTo(span[position..]);
        position += _bits.Length;
        if (withId)
        {
            XxHash128.Hash(span[..position], span[position..]);
        }

        return file;
    }

    private static void WriteFloats(Span<byte> span, ref int position, ReadOnlySpan<float> values)
    {
        MemoryMarshal.AsBytes(values).CopyTo(span[position..]);
        position += values.Length * 4;
    }
}
