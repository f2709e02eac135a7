using System.Buffers;
using System.Buffers.Binary;
using System.Numerics.Tensors;
using KvFetcher.Core;
using KvFetcher.Core.Numerics;

namespace KvFetcher.Codecs.CacheGen;

/// <summary>
/// The CacheGen baseline as LMCache ships it (its <c>cachegen</c> serde): K and V are each viewed as
/// [layers, tokens, channels = kvHeads * headDim]; every (layer, token) vector is quantized symmetrically with its
/// abs-max as the scale (<c>q = round(x * max / scale)</c> in [-max, max], <c>max = bins / 2 - 1</c>, more bins in
/// early layers: <see cref="CacheGenBins"/>); the symbols <c>q + max</c> are arithmetic-coded with one 16-bit CDF per
/// (layer, K/V, channel) counted over the chunk's tokens, and the CDFs travel with the chunk.
/// </summary>
/// <remarks>
/// <para>Differences from LMCache, all deliberate: the scales are fp16 rounded up (never below the abs-max, so no
/// value clips unless it exceeds fp16's range); a CDF covers only the layer's bins - 1 symbols instead of a fixed 33
/// entries; the coder is our own 32-bit range coder; and each (layer, K/V) plane is one stream over tokens x channels
/// (LMCache's GPU coder cuts a stream per channel for CUDA threads; the entropy model is the same).</para>
/// <para>Levels: 0 = 32/16 bins (LMCache's default), 1 = 16/8, 2 = 8/4. Dequantization is
/// <c>(symbol - max) * (scale / max)</c> in fp32, then rounded to the requested dtype.</para>
/// <para>Serialized format, little-endian. A plane is p = layer * 2 + kind (0 = K, 1 = V), n_p its symbol count.</para>
/// <code>
/// parameters:
///   0   u8      format version (1)
///   1   u8      level
///   2   u16     layers
///   4   u32     tokens
///   8   u32     channels (kvHeads * headDim)
///   12  u32[2L] byte length of each plane's stream
///   ..  f16[2L][tokens]  per-(plane, token) scale: the abs-max rounded up to fp16
/// payload, for each plane in order:
///   u16[channels][n_p - 1]  CDF: cumulative frequencies of symbols 1 .. n_p - 1 (symbol 0 starts at 0, the total
///                           is 65536); strictly increasing, so every symbol has frequency >= 1
///   u8[length_p]            range-coded symbols, token-major, channel-minor, channel c coded with its own CDF
/// </code>
/// </remarks>
public sealed class CacheGenCodec : IKvCodec
{
    private const byte FormatVersion = 1;
    private const int HeaderBytes = CacheGenParameters.CommonHeaderBytes;
    private const int CdfTotal = 1 << RangeEncoder.CdfBits;
    private const int BucketBits = 8;

    /// <summary>Channels per token this codec accepts (kvHeads * headDim); keeps every per-plane table index in range.</summary>
    private const int MaxChannels = 1 << 20;

    public static CacheGenCodec Instance { get; } = new();

    public CodecId Id => CodecId.CacheGen;

    public string Name => CodecId.CacheGen.ToName();

    public IReadOnlyList<int> Levels { get; } = [.. Enumerable.Range(0, CacheGenBins.LevelCount)];

    public int DefaultLevel => 0;

    public bool IsLossless(int level) => false;

    /// <summary>The fp16 scale of a vector whose largest magnitude is <paramref name="absMax"/>: the smallest fp16 not below it (fp16's largest finite value beyond that).</summary>
    internal static Half ScaleOf(float absMax)
    {
        if (absMax >= (float)Half.MaxValue)
        {
            return Half.MaxValue;
        }

        var scale = (Half)absMax;
        return (float)scale < absMax ? Half.BitIncrement(scale) : scale;
    }

    /// <summary>
    /// The header, stream lengths and scales, then per plane its CDFs and the range coder's bound for its symbols
    /// (<see cref="RangeEncoder.MaxEncodedLength"/>).
    /// </summary>
    public long GetMaxEncodedLength(KvShape shape, DType dtype, int level)
    {
        shape.Validate();
        CodecChecks.Level(this, level);
        int planes = shape.Layers * 2;
        long total = CacheGenParameters.Length(shape, HeaderBytes);
        for (int plane = 0; plane < planes; plane++)
        {
            int n = CacheGenBins.Symbols(CacheGenBins.Of(level, shape.Layers, plane >> 1, plane & 1));
            total += ((long)shape.Channels * (n - 1) * 2) + RangeEncoder.MaxEncodedLength((long)shape.Tokens * shape.Channels);
        }

        return total;
    }

    public void Encode(ReadOnlySpan<byte> kv, KvShape shape, DType dtype, long tokenStart, int level, IBufferWriter<byte> parameters, IBufferWriter<byte> payload)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(payload);
        CodecChecks.Input(kv, shape, dtype);
        CodecChecks.TokenStart(tokenStart);
        CodecChecks.Level(this, level);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(shape.Layers, ushort.MaxValue, nameof(shape));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(shape.Channels, MaxChannels, nameof(shape));
        int tokens = shape.Tokens;
        int channels = shape.Channels;
        int planes = shape.Layers * 2;
        long maxStream = RangeEncoder.MaxEncodedLength((long)tokens * channels);
        if (maxStream > int.MaxValue || CacheGenParameters.Length(shape, HeaderBytes) > int.MaxValue)
        {
            throw new ArgumentException($"cachegen: {shape} is too large for one chunk.", nameof(shape));
        }

        int elementSize = dtype.SizeOf();
        float[] row = ArrayPool<float>.Shared.Rent(channels);
        byte[] symbols = ArrayPool<byte>.Shared.Rent(tokens * channels);
        int[] counts = ArrayPool<int>.Shared.Rent(channels * CacheGenBins.MaxBins);
        int[] cdf = ArrayPool<int>.Shared.Rent(channels * CacheGenBins.MaxBins);
        ushort[] scales = ArrayPool<ushort>.Shared.Rent(planes * tokens);
        int[] lengths = ArrayPool<int>.Shared.Rent(planes);
        try
        {
            for (int plane = 0; plane < planes; plane++)
            {
                int bins = CacheGenBins.Of(level, shape.Layers, plane >> 1, plane & 1);
                int max = CacheGenBins.MaxMagnitude(bins);
                int n = CacheGenBins.Symbols(bins);
                Span<int> planeCounts = counts.AsSpan(0, channels * n);
                planeCounts.Clear();
                for (int t = 0; t < tokens; t++)
                {
                    long element = (((long)plane * tokens) + t) * channels;
                    Span<float> values = row.AsSpan(0, channels);
                    FloatConversions.ToSingle(dtype, kv.Slice((int)(element * elementSize), channels * elementSize), values);
                    float absMax = MathF.Abs(TensorPrimitives.MaxMagnitude<float>(values));
                    if (!float.IsFinite(absMax))
                    {
                        throw new ArgumentException($"cachegen: KV input holds a non-finite value in {PlaneName(plane)} token {t}.", nameof(kv));
                    }

                    Half scale = ScaleOf(absMax);
                    scales[(plane * tokens) + t] = BitConverter.HalfToUInt16Bits(scale);
                    float factor = scale == Half.Zero ? 0f : max / (float)scale;
                    Span<byte> rowSymbols = symbols.AsSpan(t * channels, channels);
                    for (int c = 0; c < channels; c++)
                    {
                        int q = Math.Clamp((int)MathF.Round(values[c] * factor), -max, max);
                        rowSymbols[c] = (byte)(q + max);
                        planeCounts[(c * n) + q + max]++;
                    }
                }

                Span<int> planeCdf = cdf.AsSpan(0, channels * (n + 1));
                BuildCdfs(planeCounts, tokens, n, planeCdf);
                WriteCdfs(planeCdf, channels, n, payload);

                Span<byte> output = payload.GetSpan((int)maxStream);
                var encoder = new RangeEncoder(output);
                ReadOnlySpan<byte> planeSymbols = symbols.AsSpan(0, tokens * channels);
                for (int t = 0; t < tokens; t++)
                {
                    ReadOnlySpan<byte> rowSymbols = planeSymbols.Slice(t * channels, channels);
                    for (int c = 0; c < channels; c++)
                    {
                        int entry = (c * (n + 1)) + rowSymbols[c];
                        encoder.Encode((uint)planeCdf[entry], (uint)(planeCdf[entry + 1] - planeCdf[entry]));
                    }
                }

                lengths[plane] = encoder.Finish();
                payload.Advance(lengths[plane]);
            }

            WriteParameters(parameters, level, shape, lengths.AsSpan(0, planes), scales.AsSpan(0, planes * tokens));
        }
        finally
        {
            ArrayPool<float>.Shared.Return(row);
            ArrayPool<byte>.Shared.Return(symbols);
            ArrayPool<int>.Shared.Return(counts);
            ArrayPool<int>.Shared.Return(cdf);
            ArrayPool<ushort>.Shared.Return(scales);
            ArrayPool<int>.Shared.Return(lengths);
        }
    }

    public void Decode(ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, KvShape shape, DType dtype, long tokenStart, int level, Span<byte> destination)
    {
        CodecChecks.Output(destination, shape, dtype);
        CodecChecks.TokenStart(tokenStart);
        CodecChecks.Level(this, level);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(shape.Channels, MaxChannels, nameof(shape));
        int planes = shape.Layers * 2;
        int tokens = shape.Tokens;
        int channels = shape.Channels;
        ReadOnlySpan<byte> scaleBytes = CheckParameters(parameters, shape, level);
        int lengthsOffset = HeaderBytes;
        CheckPayloadLength(parameters.Slice(lengthsOffset, 4 * planes), payload.Length, shape, level);

        int elementSize = dtype.SizeOf();
        float[] row = ArrayPool<float>.Shared.Rent(channels);
        int[] cdf = ArrayPool<int>.Shared.Rent(channels * CacheGenBins.MaxBins);
        byte[] buckets = ArrayPool<byte>.Shared.Rent(channels << BucketBits);
        try
        {
            int offset = 0;
            for (int plane = 0; plane < planes; plane++)
            {
                int bins = CacheGenBins.Of(level, shape.Layers, plane >> 1, plane & 1);
                int max = CacheGenBins.MaxMagnitude(bins);
                int n = CacheGenBins.Symbols(bins);
                int tableBytes = channels * (n - 1) * 2;
                Span<int> planeCdf = cdf.AsSpan(0, channels * (n + 1));
                ReadCdfs(payload.Slice(offset, tableBytes), channels, n, planeCdf, plane, offset);
                BuildBuckets(planeCdf, channels, n, buckets);
                offset += tableBytes;

                int length = (int)BinaryPrimitives.ReadUInt32LittleEndian(parameters.Slice(lengthsOffset + (4 * plane), 4));
                ReadOnlySpan<byte> stream = payload.Slice(offset, length);
                var decoder = new RangeDecoder(stream, out byte leading);
                if (leading != 0)
                {
                    throw new InvalidKvDataException($"cachegen: stream of {PlaneName(plane)} at payload offset {offset} starts with byte {leading}; a range-coded stream starts with 0.");
                }

                for (int t = 0; t < tokens; t++)
                {
                    int scaleIndex = (plane * tokens) + t;
                    Half scale = BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(scaleBytes.Slice(2 * scaleIndex, 2)));
                    if (!Half.IsFinite(scale) || Half.IsNegative(scale))
                    {
                        throw new InvalidKvDataException($"cachegen: scale of {PlaneName(plane)} token {t} (parameters offset {lengthsOffset + (4 * planes) + (2 * scaleIndex)}) is {scale}; scales are finite and non-negative.");
                    }

                    float step = (float)scale / max;
                    Span<float> values = row.AsSpan(0, channels);
                    for (int c = 0; c < channels; c++)
                    {
                        uint target = decoder.GetTarget();
                        if (target >= CdfTotal)
                        {
                            throw new InvalidKvDataException($"cachegen: stream of {PlaneName(plane)} at payload offset {offset} is corrupt at token {t} channel {c} (code target {target} is outside the 16-bit CDF).");
                        }

                        // Start at the first symbol of the target's 256-wide bucket and step up: the scan ends
                        // because every table ends at 65536, above any target.
                        int entry = c * (n + 1);
                        int symbol = buckets[(c << BucketBits) + (int)(target >> (RangeEncoder.CdfBits - BucketBits))];
                        while (planeCdf[entry + symbol + 1] <= target)
                        {
                            symbol++;
                        }

                        int start = planeCdf[entry + symbol];
                        decoder.Consume((uint)start, (uint)(planeCdf[entry + symbol + 1] - start));
                        values[c] = (symbol - max) * step;
                    }

                    long element = (((long)plane * tokens) + t) * channels;
                    FloatConversions.FromSingle(dtype, values, destination.Slice((int)(element * elementSize), channels * elementSize));
                }

                if (decoder.Position != length)
                {
                    throw new InvalidKvDataException($"cachegen: stream of {PlaneName(plane)} at payload offset {offset} declares {length} bytes but its symbols take {decoder.Position}.");
                }

                offset += length;
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(row);
            ArrayPool<int>.Shared.Return(cdf);
            ArrayPool<byte>.Shared.Return(buckets);
        }
    }

    /// <summary>
    /// For a decoder outside this codec (the CUDA-core decoder): checks a chunk's parameters, scales and CDF tables as
    /// <see cref="Decode"/> does (so a decoder given them can never loop or read out of bounds), and writes per plane
    /// (<c>layer * 2 + kind</c>) where its CDF table and its stream start in the payload, the stream's length, its
    /// symbol count and its largest magnitude. Tables are <c>u16[channels][symbols - 1]</c>; scales are the fp16 values
    /// at <see cref="ScalesOffset"/> in the parameters, <c>[plane][token]</c>.
    /// </summary>
    /// <exception cref="InvalidKvDataException">The chunk is malformed.</exception>
    public static void DescribePlanes(ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, KvShape shape, int level,
        Span<int> tableOffsets, Span<int> streamOffsets, Span<int> streamLengths, Span<int> symbols, Span<int> magnitudes)
    {
        CodecChecks.Level(Instance, level);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(shape.Channels, MaxChannels, nameof(shape));
        int planes = shape.Layers * 2;
        ReadOnlySpan<byte> scaleBytes = CheckParameters(parameters, shape, level);
        CheckPayloadLength(parameters.Slice(HeaderBytes, 4 * planes), payload.Length, shape, level);
        for (int i = 0; i < planes * shape.Tokens; i++)
        {
            Half scale = BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(scaleBytes.Slice(2 * i, 2)));
            if (!Half.IsFinite(scale) || Half.IsNegative(scale))
            {
                throw new InvalidKvDataException($"cachegen: scale of {PlaneName(i / shape.Tokens)} token {i % shape.Tokens} is {scale}; scales are finite and non-negative.");
            }
        }

        int[] cdf = ArrayPool<int>.Shared.Rent(shape.Channels * CacheGenBins.MaxBins);
        try
        {
            int offset = 0;
            for (int plane = 0; plane < planes; plane++)
            {
                int bins = CacheGenBins.Of(level, shape.Layers, plane >> 1, plane & 1);
                int n = CacheGenBins.Symbols(bins);
                int tableBytes = shape.Channels * (n - 1) * 2;
                ReadCdfs(payload.Slice(offset, tableBytes), shape.Channels, n, cdf.AsSpan(0, shape.Channels * (n + 1)), plane, offset);
                tableOffsets[plane] = offset;
                offset += tableBytes;
                int length = (int)BinaryPrimitives.ReadUInt32LittleEndian(parameters.Slice(HeaderBytes + (4 * plane), 4));
                streamOffsets[plane] = offset;
                streamLengths[plane] = length;
                symbols[plane] = n;
                magnitudes[plane] = CacheGenBins.MaxMagnitude(bins);
                offset += length;
            }
        }
        finally
        {
            ArrayPool<int>.Shared.Return(cdf);
        }
    }

    /// <summary>Where the fp16 scales start in the parameters of a chunk with <paramref name="layers"/> layers.</summary>
    public static int ScalesOffset(int layers) => HeaderBytes + (4 * layers * 2);

    /// <summary>For each channel and each 256-wide slice of [0, 2^16): the symbol whose range holds the slice's start.</summary>
    private static void BuildBuckets(ReadOnlySpan<int> cdf, int channels, int n, Span<byte> buckets)
    {
        for (int c = 0; c < channels; c++)
        {
            ReadOnlySpan<int> table = cdf.Slice(c * (n + 1), n + 1);
            Span<byte> channelBuckets = buckets.Slice(c << BucketBits, 1 << BucketBits);
            int symbol = 0;
            for (int b = 0; b < channelBuckets.Length; b++)
            {
                int bucketStart = b << (RangeEncoder.CdfBits - BucketBits);
                while (table[symbol + 1] <= bucketStart)
                {
                    symbol++;
                }

                channelBuckets[b] = (byte)symbol;
            }
        }
    }

    /// <summary>
    /// LMCache's CDF normalization in integers: <c>cdf[s] = round(count(symbol &lt; s) / tokens * (2^16 - n)) + s</c>,
    /// which starts at 0, ends at 2^16 and rises by at least 1 per symbol.
    /// </summary>
    private static void BuildCdfs(ReadOnlySpan<int> counts, int tokens, int n, Span<int> cdf)
    {
        long scale = CdfTotal - n;
        int channels = counts.Length / n;
        for (int c = 0; c < channels; c++)
        {
            ReadOnlySpan<int> channelCounts = counts.Slice(c * n, n);
            Span<int> table = cdf.Slice(c * (n + 1), n + 1);
            long below = 0;
            for (int s = 0; s <= n; s++)
            {
                table[s] = (int)((((below * scale * 2) + tokens) / (2L * tokens)) + s);
                if (s < n)
                {
                    below += channelCounts[s];
                }
            }
        }
    }

    private static void WriteCdfs(ReadOnlySpan<int> cdf, int channels, int n, IBufferWriter<byte> payload)
    {
        int bytes = channels * (n - 1) * 2;
        Span<byte> output = payload.GetSpan(bytes);
        int position = 0;
        for (int c = 0; c < channels; c++)
        {
            for (int s = 1; s < n; s++)
            {
                BinaryPrimitives.WriteUInt16LittleEndian(output.Slice(position, 2), (ushort)cdf[(c * (n + 1)) + s]);
                position += 2;
            }
        }

        payload.Advance(bytes);
    }

    private static void ReadCdfs(ReadOnlySpan<byte> input, int channels, int n, Span<int> cdf, int plane, int payloadOffset)
    {
        int position = 0;
        for (int c = 0; c < channels; c++)
        {
            Span<int> table = cdf.Slice(c * (n + 1), n + 1);
            table[0] = 0;
            table[n] = CdfTotal;
            for (int s = 1; s < n; s++)
            {
                int value = BinaryPrimitives.ReadUInt16LittleEndian(input.Slice(position, 2));
                if (value <= table[s - 1])
                {
                    throw new InvalidKvDataException($"cachegen: CDF of {PlaneName(plane)} channel {c} at payload offset {payloadOffset + position} is {value} for symbol {s}, not above {table[s - 1]}; a CDF rises strictly.");
                }

                table[s] = value;
                position += 2;
            }
        }
    }

    private static void WriteParameters(IBufferWriter<byte> parameters, int level, KvShape shape, ReadOnlySpan<int> lengths, ReadOnlySpan<ushort> scales) =>
        CacheGenParameters.Write(parameters, HeaderBytes, FormatVersion, level, shape, [], lengths, scales);

    /// <summary>Checks the header against the caller's shape and level; returns the scales.</summary>
    private static ReadOnlySpan<byte> CheckParameters(ReadOnlySpan<byte> parameters, KvShape shape, int level)
    {
        CacheGenParameters.Check(parameters, "cachegen", HeaderBytes, FormatVersion, shape, level);
        return parameters[(HeaderBytes + (4 * shape.Layers * 2))..];
    }

    private static void CheckPayloadLength(ReadOnlySpan<byte> lengths, int payloadLength, KvShape shape, int level)
    {
        long expected = 0;
        for (int plane = 0; plane < shape.Layers * 2; plane++)
        {
            int n = CacheGenBins.Symbols(CacheGenBins.Of(level, shape.Layers, plane >> 1, plane & 1));
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(lengths.Slice(4 * plane, 4));
            if (length > (uint)payloadLength)
            {
                throw new InvalidKvDataException($"cachegen: parameters offset {HeaderBytes + (4 * plane)}: stream length {length} of {PlaneName(plane)} exceeds the {payloadLength}-byte payload.");
            }

            expected += ((long)shape.Channels * (n - 1) * 2) + length;
        }

        if (expected != payloadLength)
        {
            throw new InvalidKvDataException($"cachegen: payload holds {payloadLength} bytes; its CDF tables and declared stream lengths take {expected}.");
        }
    }

    private static string PlaneName(int plane) => CacheGenParameters.PlaneName(plane);
}
