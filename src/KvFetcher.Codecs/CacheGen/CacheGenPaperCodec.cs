using System.Buffers;
using System.Buffers.Binary;
using System.Numerics.Tensors;
using KvFetcher.Core;
using KvFetcher.Core.Numerics;

namespace KvFetcher.Codecs.CacheGen;

/// <summary>
/// CacheGen as its paper describes its encoder (Liu et al., SIGCOMM 2024, section 5), next to the LMCache version
/// (<see cref="CacheGenCodec"/>). K and V are each viewed as [layers, tokens, channels = kvHeads * headDim]; a plane is
/// one (layer, K/V).
/// <list type="bullet">
/// <item><b>Anchors and deltas</b> (token-wise locality): a plane's tokens are cut into groups of
/// <see cref="CacheGenPaperBins.GroupTokens"/> consecutive tokens; a group's first token, the anchor, is quantized on its
/// own (symmetric, 8 bits, its abs-max as the scale); each other token is coded as its delta to the anchor as decoded, so
/// errors do not accumulate and every delta of a group decodes independently.</item>
/// <item><b>Layer-wise quantization</b>: deltas get more bins in the first third of the layers than in the middle third,
/// and more there than in the last (<see cref="CacheGenPaperBins"/>; seven levels).</item>
/// <item><b>Arithmetic coding with a distribution per (layer, channel)</b>: every (plane, channel) has one model for its
/// anchors and one for its deltas; our range coder (<see cref="RangeEncoder"/>) codes the symbols.</item>
/// </list>
/// </summary>
/// <remarks>
/// <para>Choices the paper leaves open or makes otherwise, all stated: a delta's quantization step is
/// <c>max(anchor scale, delta abs-max) / magnitude</c> per token, so that deltas smaller than the anchor fall on the
/// anchor's grid and code in few bits (the paper quantizes deltas with the layer's bins; the grid is ours); scales are fp16
/// rounded up (never below the abs-max); the paper profiles each (layer, channel) distribution offline per model, here
/// the distribution is fitted per chunk and sent as two bytes per (plane, channel, anchor/delta), a centre symbol and the
/// shape of a discrete Laplace (<see cref="LaplaceModels"/>), so a chunk decodes without any profile.</para>
/// <para>Serialized format, little-endian. A plane is p = layer * 2 + kind (0 = K, 1 = V); n_a = 255 anchor symbols,
/// n_d(p) = 2 * magnitude + 1 delta symbols.</para>
/// <code>
/// parameters:
///   0   u8      format version (1)
///   1   u8      level
///   2   u16     layers
///   4   u32     tokens
///   8   u32     channels (kvHeads * headDim)
///   12  u8      group tokens G (1..255; the encoder writes 10): token t is an anchor when t % G == 0
///   13  u8[3]   reserved, 0
///   16  u32[2L] byte length of each plane's range-coded stream
///   ..  f16[2L][tokens]  per-(plane, token) scale: an anchor's abs-max, or a delta token's
///                        max(its anchor's scale, its delta's abs-max), rounded up to fp16
/// payload, for each plane in order:
///   u8[channels]  anchor model centre, a symbol below n_a
///   u8[channels]  anchor model shape, below 64
///   u8[channels]  delta model centre, a symbol below n_d(p)
///   u8[channels]  delta model shape, below 64
///   u8[length_p]  range-coded symbols, token-major, channel-minor; symbol q + magnitude
/// decoding: anchor x = q * (scale / 127); delta token x = anchor x + q * (scale / magnitude), in fp32
/// </code>
/// </remarks>
public sealed class CacheGenPaperCodec : IKvCodec
{
    private const byte FormatVersion = 1;
    private const int HeaderBytes = 16;
    private const int CdfTotal = 1 << RangeEncoder.CdfBits;
    private const int BucketShift = RangeEncoder.CdfBits - LaplaceModels.BucketBits;

    /// <summary>Channels per token this codec accepts (kvHeads * headDim); keeps every per-plane table index in range.</summary>
    private const int MaxChannels = 1 << 20;

    public static CacheGenPaperCodec Instance { get; } = new();

    public CodecId Id => CodecId.CacheGenP;

    public string Name => CodecId.CacheGenP.ToName();

    public IReadOnlyList<int> Levels { get; } = [.. Enumerable.Range(0, CacheGenPaperBins.LevelCount)];

    public int DefaultLevel => 0;

    public bool IsLossless(int level) => false;

    /// <summary>Header, stream lengths, scales, then per plane its models and the range coder's bound for its symbols.</summary>
    public long GetMaxEncodedLength(KvShape shape, DType dtype, int level)
    {
        shape.Validate();
        CodecChecks.Level(this, level);
        int planes = shape.Layers * 2;
        return ParametersLength(shape) + (planes * ((4L * shape.Channels) + RangeEncoder.MaxEncodedLength((long)shape.Tokens * shape.Channels)));
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
        if (maxStream > int.MaxValue || ParametersLength(shape) > int.MaxValue)
        {
            throw new ArgumentException($"cachegenp: {shape} is too large for one chunk.", nameof(shape));
        }

        const int Group = CacheGenPaperBins.GroupTokens;
        const int AnchorSymbols = CacheGenPaperBins.MaxSymbols;
        int elementSize = dtype.SizeOf();
        float[] row = ArrayPool<float>.Shared.Rent(channels);
        float[] anchor = ArrayPool<float>.Shared.Rent(channels);
        byte[] symbols = ArrayPool<byte>.Shared.Rent(tokens * channels);
        int[] histograms = ArrayPool<int>.Shared.Rent(channels * AnchorSymbols * 2);
        int[] models = ArrayPool<int>.Shared.Rent(channels * 2);
        ushort[] scales = ArrayPool<ushort>.Shared.Rent(planes * tokens);
        int[] lengths = ArrayPool<int>.Shared.Rent(planes);
        try
        {
            for (int plane = 0; plane < planes; plane++)
            {
                int magnitude = CacheGenPaperBins.DeltaMagnitude(level, shape.Layers, plane >> 1);
                int deltaSymbols = CacheGenPaperBins.Symbols(magnitude);
                Span<int> anchorCounts = histograms.AsSpan(0, channels * AnchorSymbols);
                Span<int> deltaCounts = histograms.AsSpan(channels * AnchorSymbols, channels * deltaSymbols);
                anchorCounts.Clear();
                deltaCounts.Clear();
                Span<float> values = row.AsSpan(0, channels);
                Span<float> anchorValues = anchor.AsSpan(0, channels);
                float anchorScale = 0;
                for (int t = 0; t < tokens; t++)
                {
                    long element = (((long)plane * tokens) + t) * channels;
                    FloatConversions.ToSingle(dtype, kv.Slice((int)(element * elementSize), channels * elementSize), values);
                    Span<byte> rowSymbols = symbols.AsSpan(t * channels, channels);
                    bool isAnchor = t % Group == 0;
                    if (!isAnchor)
                    {
                        TensorPrimitives.Subtract(values, anchorValues, values);
                    }

                    float absMax = MathF.Abs(TensorPrimitives.MaxMagnitude<float>(values));
                    if (!float.IsFinite(absMax))
                    {
                        throw new ArgumentException($"cachegenp: KV input holds a non-finite value in {PlaneName(plane)} token {t}.", nameof(kv));
                    }

                    Half scale = CacheGenCodec.ScaleOf(isAnchor ? absMax : MathF.Max(absMax, anchorScale));
                    scales[(plane * tokens) + t] = BitConverter.HalfToUInt16Bits(scale);
                    int max = isAnchor ? CacheGenPaperBins.AnchorMagnitude : magnitude;
                    int n = CacheGenPaperBins.Symbols(max);
                    Span<int> counts = isAnchor ? anchorCounts : deltaCounts;
                    float factor = scale == Half.Zero ? 0f : max / (float)scale;
                    float step = (float)scale / max;
                    for (int c = 0; c < channels; c++)
                    {
                        int q = Math.Clamp((int)MathF.Round(values[c] * factor), -max, max);
                        rowSymbols[c] = (byte)(q + max);
                        counts[(c * n) + q + max]++;
                        if (isAnchor)
                        {
                            anchorValues[c] = q * step;
                        }
                    }

                    if (isAnchor)
                    {
                        anchorScale = (float)scale;
                    }
                }

                // Models: anchor centre and shape, then delta centre and shape, per channel.
                Span<byte> modelBytes = payload.GetSpan(4 * channels)[..(4 * channels)];
                Span<int> anchorModels = models.AsSpan(0, channels);
                Span<int> deltaModels = models.AsSpan(channels, channels);
                for (int c = 0; c < channels; c++)
                {
                    (int center, int parameter) = LaplaceModels.Fit(anchorCounts.Slice(c * AnchorSymbols, AnchorSymbols));
                    modelBytes[c] = (byte)center;
                    modelBytes[channels + c] = (byte)parameter;
                    anchorModels[c] = (center << 8) | parameter;
                    (center, parameter) = LaplaceModels.Fit(deltaCounts.Slice(c * deltaSymbols, deltaSymbols));
                    modelBytes[(2 * channels) + c] = (byte)center;
                    modelBytes[(3 * channels) + c] = (byte)parameter;
                    deltaModels[c] = (center << 8) | parameter;
                }

                payload.Advance(4 * channels);
                Span<byte> output = payload.GetSpan((int)maxStream);
                var encoder = new RangeEncoder(output);
                ReadOnlySpan<int> cdfs = LaplaceModels.Cdfs;
                for (int t = 0; t < tokens; t++)
                {
                    bool isAnchor = t % Group == 0;
                    int n = isAnchor ? AnchorSymbols : deltaSymbols;
                    ReadOnlySpan<int> rowModels = isAnchor ? anchorModels : deltaModels;
                    ReadOnlySpan<byte> rowSymbols = symbols.AsSpan(t * channels, channels);
                    for (int c = 0; c < channels; c++)
                    {
                        int model = rowModels[c];
                        int entry = LaplaceModels.CdfOffset(n, model & 0xFF) + LaplaceModels.IndexOf(rowSymbols[c], model >> 8, n);
                        encoder.Encode((uint)cdfs[entry], (uint)(cdfs[entry + 1] - cdfs[entry]));
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
            ArrayPool<float>.Shared.Return(anchor);
            ArrayPool<byte>.Shared.Return(symbols);
            ArrayPool<int>.Shared.Return(histograms);
            ArrayPool<int>.Shared.Return(models);
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
        int group = CheckParameters(parameters, shape, level);
        ReadOnlySpan<byte> scaleBytes = parameters[(HeaderBytes + (4 * planes))..];
        CheckPayloadLength(parameters.Slice(HeaderBytes, 4 * planes), payload.Length, shape);

        const int AnchorSymbols = CacheGenPaperBins.MaxSymbols;
        int elementSize = dtype.SizeOf();
        float[] row = ArrayPool<float>.Shared.Rent(channels);
        float[] anchor = ArrayPool<float>.Shared.Rent(channels);
        int[] tables = ArrayPool<int>.Shared.Rent(channels * 6);
        try
        {
            ReadOnlySpan<int> cdfs = LaplaceModels.Cdfs;
            ReadOnlySpan<byte> buckets = LaplaceModels.Buckets;
            int offset = 0;
            for (int plane = 0; plane < planes; plane++)
            {
                int magnitude = CacheGenPaperBins.DeltaMagnitude(level, shape.Layers, plane >> 1);
                int deltaSymbols = CacheGenPaperBins.Symbols(magnitude);

                // Per channel and stream (anchor, delta): CDF offset, bucket offset, centre.
                ReadOnlySpan<byte> modelBytes = payload.Slice(offset, 4 * channels);
                Span<int> anchorTables = tables.AsSpan(0, 3 * channels);
                Span<int> deltaTables = tables.AsSpan(3 * channels, 3 * channels);
                ReadModels(modelBytes[..(2 * channels)], AnchorSymbols, anchorTables, plane, "anchor", offset);
                ReadModels(modelBytes[(2 * channels)..], deltaSymbols, deltaTables, plane, "delta", offset + (2 * channels));
                offset += 4 * channels;

                int length = (int)BinaryPrimitives.ReadUInt32LittleEndian(parameters.Slice(HeaderBytes + (4 * plane), 4));
                var decoder = new RangeDecoder(payload.Slice(offset, length), out byte leading);
                if (leading != 0)
                {
                    throw new InvalidKvDataException($"cachegenp: stream of {PlaneName(plane)} at payload offset {offset} starts with byte {leading}; a range-coded stream starts with 0.");
                }

                Span<float> values = row.AsSpan(0, channels);
                Span<float> anchorValues = anchor.AsSpan(0, channels);
                for (int t = 0; t < tokens; t++)
                {
                    int scaleIndex = (plane * tokens) + t;
                    Half scale = BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(scaleBytes.Slice(2 * scaleIndex, 2)));
                    if (!Half.IsFinite(scale) || Half.IsNegative(scale))
                    {
                        throw new InvalidKvDataException($"cachegenp: scale of {PlaneName(plane)} token {t} (parameters offset {HeaderBytes + (4 * planes) + (2 * scaleIndex)}) is {scale}; scales are finite and non-negative.");
                    }

                    bool isAnchor = t % group == 0;
                    int max = isAnchor ? CacheGenPaperBins.AnchorMagnitude : magnitude;
                    int n = isAnchor ? AnchorSymbols : deltaSymbols;
                    ReadOnlySpan<int> rowTables = isAnchor ? anchorTables : deltaTables;
                    float step = (float)scale / max;
                    for (int c = 0; c < channels; c++)
                    {
                        uint target = decoder.GetTarget();
                        if (target >= CdfTotal)
                        {
                            throw new InvalidKvDataException($"cachegenp: stream of {PlaneName(plane)} at payload offset {offset} is corrupt at token {t} channel {c} (code target {target} is outside the 16-bit CDF).");
                        }

                        // The bucket gives the first candidate; the scan ends because every table ends at 65536.
                        int cdf = rowTables[3 * c];
                        int index = buckets[rowTables[(3 * c) + 1] + (int)(target >> BucketShift)];
                        while (cdfs[cdf + index + 1] <= target)
                        {
                            index++;
                        }

                        int start = cdfs[cdf + index];
                        decoder.Consume((uint)start, (uint)(cdfs[cdf + index + 1] - start));
                        int q = LaplaceModels.SymbolOf(index, rowTables[(3 * c) + 2], n) - max;
                        values[c] = isAnchor ? q * step : anchorValues[c] + (q * step);
                    }

                    if (isAnchor)
                    {
                        values.CopyTo(anchorValues);
                    }

                    long element = (((long)plane * tokens) + t) * channels;
                    FloatConversions.FromSingle(dtype, values, destination.Slice((int)(element * elementSize), channels * elementSize));
                }

                if (decoder.Position != length)
                {
                    throw new InvalidKvDataException($"cachegenp: stream of {PlaneName(plane)} at payload offset {offset} declares {length} bytes but its symbols take {decoder.Position}.");
                }

                offset += length;
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(row);
            ArrayPool<float>.Shared.Return(anchor);
            ArrayPool<int>.Shared.Return(tables);
        }
    }

    private static long ParametersLength(KvShape shape) => CacheGenParameters.Length(shape, HeaderBytes);

    /// <summary>Checks one stream's models (centres, then shapes) and writes per channel its CDF offset, bucket offset and centre.</summary>
    private static void ReadModels(ReadOnlySpan<byte> input, int symbols, Span<int> tables, int plane, string stream, int payloadOffset)
    {
        int channels = input.Length / 2;
        for (int c = 0; c < channels; c++)
        {
            int center = input[c];
            int parameter = input[channels + c];
            if (center >= symbols)
            {
                throw new InvalidKvDataException($"cachegenp: {stream} model centre of {PlaneName(plane)} channel {c} at payload offset {payloadOffset + c} is {center}; the alphabet has {symbols} symbols.");
            }

            if (parameter >= LaplaceModels.ParameterCount)
            {
                throw new InvalidKvDataException($"cachegenp: {stream} model shape of {PlaneName(plane)} channel {c} at payload offset {payloadOffset + channels + c} is {parameter}; shapes are below {LaplaceModels.ParameterCount}.");
            }

            tables[3 * c] = LaplaceModels.CdfOffset(symbols, parameter);
            tables[(3 * c) + 1] = LaplaceModels.BucketOffset(symbols, parameter);
            tables[(3 * c) + 2] = center;
        }
    }

    private static void WriteParameters(IBufferWriter<byte> parameters, int level, KvShape shape, ReadOnlySpan<int> lengths, ReadOnlySpan<ushort> scales) =>
        CacheGenParameters.Write(parameters, HeaderBytes, FormatVersion, level, shape, [CacheGenPaperBins.GroupTokens], lengths, scales);

    /// <summary>Checks the header against the caller's shape and level; returns the group size.</summary>
    private static int CheckParameters(ReadOnlySpan<byte> parameters, KvShape shape, int level)
    {
        CacheGenParameters.Check(parameters, "cachegenp", HeaderBytes, FormatVersion, shape, level);
        int group = parameters[12];
        if (group == 0)
        {
            throw new InvalidKvDataException("cachegenp: parameters offset 12: group tokens 0; a group holds at least its anchor.");
        }

        for (int i = 13; i < HeaderBytes; i++)
        {
            if (parameters[i] != 0)
            {
                throw new InvalidKvDataException($"cachegenp: parameters offset {i}: reserved byte {parameters[i]} is not 0.");
            }
        }

        return group;
    }

    private static void CheckPayloadLength(ReadOnlySpan<byte> lengths, int payloadLength, KvShape shape)
    {
        long expected = 0;
        for (int plane = 0; plane < shape.Layers * 2; plane++)
        {
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(lengths.Slice(4 * plane, 4));
            if (length > (uint)payloadLength)
            {
                throw new InvalidKvDataException($"cachegenp: parameters offset {HeaderBytes + (4 * plane)}: stream length {length} of {PlaneName(plane)} exceeds the {payloadLength}-byte payload.");
            }

            expected += (4L * shape.Channels) + length;
        }

        if (expected != payloadLength)
        {
            throw new InvalidKvDataException($"cachegenp: payload holds {payloadLength} bytes; its models and declared stream lengths take {expected}.");
        }
    }

    private static string PlaneName(int plane) => CacheGenParameters.PlaneName(plane);
}
