using System.Buffers;
using System.Buffers.Binary;
using System.Numerics.Tensors;
using KvFetcher.Codecs.Entropy;
using KvFetcher.Core;
using KvFetcher.Core.Numerics;

namespace KvFetcher.Codecs.Transform;

/// <summary>
/// <c>kvtc</c>: transform coding in the spirit of KVTC. Keys are taken back to before their rotary embedding (the
/// transform's <see cref="KvtcTransform.KeyRotation"/> at each token's position, <c>tokenStart + t</c>) and the decoder
/// rotates them again; every block (the keys or the values of a group of neighbouring layers, channels concatenated) of a
/// chunk is centred and transformed into the model's components (<see cref="KvtcTransform"/>, fitted once per model and
/// bound to its fingerprint); each
/// component is quantized uniformly with the step its level's bit allocation gives it (components given no bits are
/// dropped), and the quantized coefficients are rANS-coded, one frequency table per bit width for the chunk and its symbols in independent segments (a GPU decodes them side by side). The first tokens of each
/// chunk (attention sinks when the chunk starts the context) and optionally the last ones are stored exactly. Format:
/// <see cref="KvtcChunkFormat"/>.
/// </summary>
/// <remarks>
/// <see cref="Instance"/> (the one in <see cref="KvCodecs"/>) uses the transforms loaded in <see cref="KvtcTransforms"/>;
/// <c>new TransformCodec(transform)</c> is bound to one transform (tests, tools that hold several models).
/// </remarks>
public sealed class TransformCodec : IKvCodec
{
    private readonly KvtcTransform? _bound;

    /// <summary>A codec bound to <paramref name="transform"/>: it encodes with it and decodes only chunks coded with it.</summary>
    public TransformCodec(KvtcTransform transform)
    {
        ArgumentNullException.ThrowIfNull(transform);
        _bound = transform;
    }

    private TransformCodec()
    {
    }

    /// <summary>The codec of <see cref="KvCodecs"/>: the loaded transforms (<see cref="KvtcTransforms"/>).</summary>
    public static TransformCodec Instance { get; } = new();

    public CodecId Id => CodecId.Kvtc;

    public string Name => CodecId.Kvtc.ToName();

    public IReadOnlyList<int> Levels { get; } = [.. Enumerable.Range(0, KvtcTransform.LevelCount)];

    public int DefaultLevel => 1;

    /// <summary>Unavailable until a model's transform is loaded (<c>kvfetch calibrate</c> fits one).</summary>
    public string? Unavailable => _bound is not null || KvtcTransforms.Count > 0
        ? null
        : "no kvtc transform is loaded (kvfetch calibrate --model DIR fits one and writes it next to the model)";

    public bool IsLossless(int level) => false;

    /// <summary>
    /// The parameters, then per plane every token's values at up to four bytes each (a two-byte symbol and a two-byte
    /// escape, or the stored value, whichever is larger) and the framing of the segmented rANS streams
    /// (<see cref="KvtcChunkFormat.FramingBound"/>).
    /// </summary>
    public long GetMaxEncodedLength(KvShape shape, DType dtype, int level)
    {
        shape.Validate();
        CodecChecks.Level(this, level);
        long perValue = Math.Max(4, dtype.SizeOf());
        return KvtcChunkFormat.ParametersSize + KvtcChunkFormat.FramingBound(shape.Elements) + (shape.Elements * perValue);
    }

    public void Encode(ReadOnlySpan<byte> kv, KvShape shape, DType dtype, long tokenStart, int level, IBufferWriter<byte> parameters, IBufferWriter<byte> payload)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(payload);
        CodecChecks.Input(kv, shape, dtype);
        CodecChecks.TokenStart(tokenStart);
        CodecChecks.Level(this, level);
        KvtcTransform transform = _bound ?? KvtcTransforms.ForEncoding(shape)
            ?? throw new InvalidOperationException($"kvtc: no transform is loaded for {shape} (run kvfetch calibrate --model DIR).");
        if (!transform.Fits(shape))
        {
            throw new ArgumentException($"kvtc: transform {transform.IdText} is for {transform.Layers} layers x {transform.KvHeads} x {transform.HeadDim}; the chunk is {shape}.", nameof(shape));
        }

        ArgumentOutOfRangeException.ThrowIfGreaterThan(GetMaxEncodedLength(shape, dtype, level), int.MaxValue, nameof(shape));
        int tokens = shape.Tokens;
        int c = shape.Channels;
        int planes = shape.Layers * 2;
        int elementSize = dtype.SizeOf();
        (int head, int tail) = KvtcChunkFormat.ExactTokens(transform, tokens);
        int codedEnd = tokens - tail;

        Span<byte> header = parameters.GetSpan(KvtcChunkFormat.ParametersSize)[..KvtcChunkFormat.ParametersSize];
        KvtcChunkFormat.Write(header, level, shape, head, tail, transform.Id);
        parameters.Advance(KvtcChunkFormat.ParametersSize);

        // Exact tokens first, as stored.
        int rowBytes = c * elementSize;
        for (int p = 0; p < planes; p++)
        {
            long planeStart = (long)p * tokens * rowBytes;
            payload.Write(kv.Slice((int)planeStart, head * rowBytes));
            payload.Write(kv.Slice((int)(planeStart + ((long)codedEnd * rowBytes)), tail * rowBytes));
        }

        int coded = codedEnd - head;
        if (coded == 0)
        {
            return;
        }

        float[] x = ArrayPool<float>.Shared.Rent(transform.GroupLayers * c);
        byte[] symbols = ArrayPool<byte>.Shared.Rent(planes * coded * c);
        short[] escapes = ArrayPool<short>.Shared.Rent(planes * coded * c);
        KvtcKeyRotation rotation = transform.KeyRotation;
        float[] angles = rotation.RentAngles(tokenStart + head, coded);
        int[] groupStarts = GroupStarts(transform, level, coded);
        var histogram = new int[256];
        Span<int> cursor = stackalloc int[KvtcTransform.MaxBits + 2];
        groupStarts.CopyTo(cursor);
        try
        {
            for (int block = 0; block < transform.Blocks; block++)
            {
                ReadOnlySpan<byte> bits = transform.Bits(level, block);
                ReadOnlySpan<float> steps = transform.Steps(level, block);
                ReadOnlySpan<float> mean = transform.Mean(block);
                int firstLayer = transform.BlockFirstLayer(block);
                int kind = block & 1;
                int d = transform.BlockChannels(block);
                for (int t = head; t < codedEnd; t++)
                {
                    Span<float> row = x.AsSpan(0, d);
                    for (int l = 0; l < d / c; l++)
                    {
                        int p = ((firstLayer + l) * 2) + kind;
                        long element = (((long)p * tokens) + t) * c;
                        Span<float> part = row.Slice(l * c, c);
                        FloatConversions.ToSingle(dtype, kv.Slice((int)(element * elementSize), rowBytes), part);
                        if (!float.IsFinite(TensorPrimitives.MaxMagnitude<float>(part)))
                        {
                            throw new ArgumentException($"kvtc: KV input holds a non-finite value in layer {p >> 1} {(kind == 0 ? 'K' : 'V')} token {t}.", nameof(kv));
                        }

                        if (kind == 0)
                        {
                            rotation.RotateToken(part, shape.HeadDim, angles, t - head, inverse: true);
                        }
                    }

                    TensorPrimitives.Subtract(row, mean, row);
                    for (int k = 0; k < d; k++)
                    {
                        int b = bits[k];
                        if (b == 0)
                        {
                            continue;
                        }

                        float coefficient = TensorPrimitives.Dot(transform.Forward(block, k), row);
                        int q = (int)Math.Clamp(MathF.Round(coefficient / steps[k]), short.MinValue + 1, short.MaxValue);
                        if (q is < -KvtcChunkFormat.MaxMagnitude or > KvtcChunkFormat.MaxMagnitude)
                        {
                            escapes[cursor[b]] = (short)q;
                            symbols[cursor[b]++] = KvtcChunkFormat.Escape;
                        }
                        else
                        {
                            symbols[cursor[b]++] = (byte)(q + KvtcChunkFormat.MaxMagnitude);
                        }
                    }
                }
            }

            int escapeCount = WriteSegments(symbols, groupStarts, histogram, payload);
            Span<byte> escapeBytes = payload.GetSpan(4 + (2 * escapeCount));
            BinaryPrimitives.WriteUInt32LittleEndian(escapeBytes, (uint)escapeCount);
            int written = 4;
            for (int b = 1; b <= KvtcTransform.MaxBits; b++)
            {
                for (int i = groupStarts[b]; i < groupStarts[b + 1]; i++)
                {
                    if (symbols[i] == KvtcChunkFormat.Escape)
                    {
                        BinaryPrimitives.WriteInt16LittleEndian(escapeBytes[written..], escapes[i]);
                        written += 2;
                    }
                }
            }

            payload.Advance(written);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(x);
            ArrayPool<byte>.Shared.Return(symbols);
            ArrayPool<short>.Shared.Return(escapes);
            KvtcKeyRotation.ReturnAngles(angles);
        }
    }

    public void Decode(ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, KvShape shape, DType dtype, long tokenStart, int level, Span<byte> destination)
    {
        CodecChecks.Output(destination, shape, dtype);
        CodecChecks.TokenStart(tokenStart);
        CodecChecks.Level(this, level);
        KvtcChunkLayout layout = t_layout ??= new KvtcChunkLayout();
        layout.Read(parameters, payload, shape, dtype, level, _bound);
        KvtcTransform transform = layout.Transform;
        int tokens = shape.Tokens;
        int c = shape.Channels;
        int planes = shape.Layers * 2;
        int elementSize = dtype.SizeOf();
        int rowBytes = c * elementSize;
        int head = layout.ExactHead;
        int tail = layout.ExactTail;
        int codedEnd = tokens - tail;
        int coded = layout.Coded;

        int offset = 0;
        for (int p = 0; p < planes; p++)
        {
            long planeStart = (long)p * tokens * rowBytes;
            payload.Slice(offset, head * rowBytes).CopyTo(destination.Slice((int)planeStart, head * rowBytes));
            offset += head * rowBytes;
            payload.Slice(offset, tail * rowBytes).CopyTo(destination.Slice((int)(planeStart + ((long)codedEnd * rowBytes)), tail * rowBytes));
            offset += tail * rowBytes;
        }

        if (coded == 0)
        {
            return;
        }

        float[] x = ArrayPool<float>.Shared.Rent(transform.GroupLayers * c);
        byte[] symbols = ArrayPool<byte>.Shared.Rent((int)layout.SymbolCount);
        Span<int> cursor = stackalloc int[KvtcTransform.MaxBits + 2];
        Span<int> nextEscape = stackalloc int[KvtcTransform.MaxBits + 2];
        KvtcKeyRotation rotation = transform.KeyRotation;
        float[] angles = rotation.RentAngles(tokenStart + head, coded);
        try
        {
            DecodeSegments(layout, payload, symbols);
            ReadOnlySpan<int> segments = layout.Segments;
            for (int b = 1; b <= KvtcTransform.MaxBits; b++)
            {
                cursor[b] = (int)layout.SymbolStart(b);
            }

            for (int i = layout.SegmentCount - 1; i >= 0; i--)
            {
                ReadOnlySpan<int> segment = segments.Slice(i * KvtcChunkLayout.SegmentFields, KvtcChunkLayout.SegmentFields);
                nextEscape[segment[KvtcChunkLayout.BitsField]] = segment[KvtcChunkLayout.FirstEscapeField];
            }

            ReadOnlySpan<byte> escapes = payload.Slice(layout.EscapeOffset, layout.EscapeCount * 2);
            for (int block = 0; block < transform.Blocks; block++)
            {
                ReadOnlySpan<byte> bits = transform.Bits(level, block);
                ReadOnlySpan<float> steps = transform.Steps(level, block);
                ReadOnlySpan<float> mean = transform.Mean(block);
                int firstLayer = transform.BlockFirstLayer(block);
                int kind = block & 1;
                int d = transform.BlockChannels(block);
                for (int t = head; t < codedEnd; t++)
                {
                    Span<float> row = x.AsSpan(0, d);
                    mean.CopyTo(row);
                    for (int k = 0; k < d; k++)
                    {
                        int b = bits[k];
                        if (b == 0)
                        {
                            continue;
                        }

                        int symbol = symbols[cursor[b]++];
                        int q = symbol == KvtcChunkFormat.Escape
                            ? BinaryPrimitives.ReadInt16LittleEndian(escapes.Slice(2 * nextEscape[b]++, 2))
                            : symbol - KvtcChunkFormat.MaxMagnitude;
                        if (q != 0)
                        {
                            TensorPrimitives.MultiplyAdd(transform.Inverse(block, k), q * steps[k], row, row);
                        }
                    }

                    for (int l = 0; l < d / c; l++)
                    {
                        int p = ((firstLayer + l) * 2) + kind;
                        Span<float> part = row.Slice(l * c, c);
                        if (kind == 0)
                        {
                            rotation.RotateToken(part, shape.HeadDim, angles, t - head, inverse: false);
                        }

                        long element = (((long)p * tokens) + t) * c;
                        FloatConversions.FromSingle(dtype, part, destination.Slice((int)(element * elementSize), rowBytes));
                    }
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(x);
            ArrayPool<byte>.Shared.Return(symbols);
            KvtcKeyRotation.ReturnAngles(angles);
        }
    }

    /// <summary>
    /// Decodes every segment of <paramref name="layout"/> into <paramref name="symbols"/> (each bit width's symbols at
    /// its start) and checks each segment's escape count.
    /// </summary>
    private static void DecodeSegments(KvtcChunkLayout layout, ReadOnlySpan<byte> payload, byte[] symbols)
    {
        ReadOnlySpan<int> segments = layout.Segments;
        int previousBits = 0;
        long next = 0;
        for (int i = 0; i < layout.SegmentCount; i++)
        {
            ReadOnlySpan<int> segment = segments.Slice(i * KvtcChunkLayout.SegmentFields, KvtcChunkLayout.SegmentFields);
            int b = segment[KvtcChunkLayout.BitsField];
            if (b != previousBits)
            {
                next = layout.SymbolStart(b);
                previousBits = b;
            }

            int n = segment[KvtcChunkLayout.SymbolsField];
            Span<byte> output = symbols.AsSpan((int)next, n);
            next += n;
            int streamOffset = segment[KvtcChunkLayout.StreamOffsetField];
            layout.Table(b).Decode(payload.Slice(streamOffset, segment[KvtcChunkLayout.StreamBytesField]), output, streamOffset);
            int escapes = output.Count((byte)KvtcChunkFormat.Escape);
            if (escapes != segment[KvtcChunkLayout.EscapesField])
            {
                throw new InvalidKvDataException($"kvtc: the segment at payload offset {streamOffset} (bit width {b}) declares {segment[KvtcChunkLayout.EscapesField]} escapes; its symbols hold {escapes}.");
            }
        }
    }

    [ThreadStatic]
    private static KvtcChunkLayout? t_layout;

    /// <summary>
    /// Writes every bit width's table, segment table and segment streams (<see cref="KvtcChunkFormat"/>) for the symbols
    /// at <paramref name="groupStarts"/>; returns the escapes among them.
    /// </summary>
    private static int WriteSegments(byte[] symbols, int[] groupStarts, int[] histogram, IBufferWriter<byte> payload)
    {
        var table = new StaticRans.SegmentTable();
        int escapeCount = 0;
        for (int b = 1; b <= KvtcTransform.MaxBits; b++)
        {
            int n = groupStarts[b + 1] - groupStarts[b];
            if (n == 0)
            {
                continue;
            }

            ReadOnlySpan<byte> group = symbols.AsSpan(groupStarts[b], n);
            Array.Clear(histogram);
            StaticRans.Count(group, histogram);
            table.Build(histogram, n);
            int segments = (n + KvtcChunkFormat.SegmentSymbols - 1) / KvtcChunkFormat.SegmentSymbols;
            long capacityLong = StaticRans.MaxTableBytes + 4 + ((long)segments * (KvtcChunkFormat.SegmentEntryBytes + 16)) + (2L * n);
            int capacity = checked((int)capacityLong);
            Span<byte> destination = payload.GetSpan(capacity)[..capacity];
            int position = table.Write(destination);
            BinaryPrimitives.WriteUInt32LittleEndian(destination[position..], (uint)segments);
            position += 4;
            int entries = position;
            position += segments * KvtcChunkFormat.SegmentEntryBytes;
            for (int i = 0; i < segments; i++)
            {
                int start = i * KvtcChunkFormat.SegmentSymbols;
                ReadOnlySpan<byte> segment = group.Slice(start, Math.Min(KvtcChunkFormat.SegmentSymbols, n - start));
                int written = table.TryEncode(segment, destination[position..]);
                if (written < 0)
                {
                    throw new InvalidOperationException($"kvtc: a rANS segment of {segment.Length} symbols did not fit {destination.Length - position} bytes.");
                }

                int segmentEscapes = segment.Count((byte)KvtcChunkFormat.Escape);
                BinaryPrimitives.WriteUInt32LittleEndian(destination[(entries + (i * KvtcChunkFormat.SegmentEntryBytes))..], (uint)written);
                BinaryPrimitives.WriteUInt32LittleEndian(destination[(entries + (i * KvtcChunkFormat.SegmentEntryBytes) + 4)..], (uint)segmentEscapes);
                position += written;
                escapeCount += segmentEscapes;
            }

            payload.Advance(position);
        }

        return escapeCount;
    }

    /// <summary>
    /// Where each bit width's symbols start in the chunk's symbol buffer (index b = 1..MaxBits; b + 1 is its end): the
    /// blocks in order, each its coded tokens times its components of that width.
    /// </summary>
    private static int[] GroupStarts(KvtcTransform transform, int level, int coded)
    {
        var totals = new long[KvtcTransform.MaxBits + 1];
        for (int block = 0; block < transform.Blocks; block++)
        {
            foreach (byte b in transform.Bits(level, block))
            {
                totals[b] += coded;
            }
        }

        var starts = new int[KvtcTransform.MaxBits + 2];
        for (int b = 1; b <= KvtcTransform.MaxBits; b++)
        {
            starts[b + 1] = checked(starts[b] + (int)totals[b]);
        }

        return starts;
    }
}
