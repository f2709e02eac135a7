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
/// dropped), and the quantized coefficients are rANS-coded, one rANS block per bit width for the chunk. The first tokens of each
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
    /// escape, or the stored value, whichever is larger) and the framing of up to <see cref="KvtcTransform.MaxBits"/> rANS
    /// blocks and the escape count.
    /// </summary>
    public long GetMaxEncodedLength(KvShape shape, DType dtype, int level)
    {
        shape.Validate();
        CodecChecks.Level(this, level);
        long perValue = Math.Max(4, dtype.SizeOf());
        return KvtcChunkFormat.ParametersSize + (shape.Layers * 2L * ((KvtcTransform.MaxBits * (long)KvtcChunkFormat.RansOverhead) + 4))
            + (shape.Elements * perValue);
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
        int[] histogram = new int[256];
        Span<int> cursor = stackalloc int[KvtcTransform.MaxBits + 2];
        groupStarts.CopyTo(cursor);
        try
        {
            int escapeCount = 0;
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
                            symbols[cursor[b]++] = KvtcChunkFormat.Escape;
                            escapes[escapeCount++] = (short)q;
                        }
                        else
                        {
                            symbols[cursor[b]++] = (byte)(q + KvtcChunkFormat.MaxMagnitude);
                        }
                    }
                }
            }

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
                int capacity = KvtcChunkFormat.RansOverhead + (2 * n) + 16;
                int written = StaticRans.TryEncode(group, histogram, payload.GetSpan(capacity)[..capacity]);
                if (written < 0)
                {
                    throw new InvalidOperationException($"kvtc: a rANS block of {n} symbols did not fit {capacity} bytes.");
                }

                payload.Advance(written);
            }

            Span<byte> escapeBytes = payload.GetSpan(4 + (2 * escapeCount));
            BinaryPrimitives.WriteUInt32LittleEndian(escapeBytes, (uint)escapeCount);
            for (int i = 0; i < escapeCount; i++)
            {
                BinaryPrimitives.WriteInt16LittleEndian(escapeBytes[(4 + (2 * i))..], escapes[i]);
            }

            payload.Advance(4 + (2 * escapeCount));
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
        (KvtcChunkFormat.Header header, KvtcTransform transform) = KvtcChunkFormat.Read(parameters, shape, level, _bound);
        int tokens = shape.Tokens;
        int c = shape.Channels;
        int planes = shape.Layers * 2;
        int elementSize = dtype.SizeOf();
        int rowBytes = c * elementSize;
        int head = header.ExactHead;
        int tail = header.ExactTail;
        int codedEnd = tokens - tail;
        int coded = codedEnd - head;

        long exactBytes = (long)planes * (head + tail) * rowBytes;
        if (payload.Length < exactBytes)
        {
            throw new InvalidKvDataException($"kvtc: payload holds {payload.Length} bytes; its exact tokens alone take {exactBytes}.");
        }

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
            if (offset != payload.Length)
            {
                throw new InvalidKvDataException($"kvtc: payload holds {payload.Length} bytes; a chunk of exact tokens only takes {offset}.");
            }

            return;
        }

        float[] x = ArrayPool<float>.Shared.Rent(transform.GroupLayers * c);
        byte[] symbols = ArrayPool<byte>.Shared.Rent(planes * coded * c);
        int[] groupStarts = GroupStarts(transform, level, coded);
        Span<int> cursor = stackalloc int[KvtcTransform.MaxBits + 2];
        groupStarts.CopyTo(cursor);
        KvtcKeyRotation rotation = transform.KeyRotation;
        float[] angles = rotation.RentAngles(tokenStart + head, coded);
        try
        {
            int escapesExpected = 0;
            for (int b = 1; b <= KvtcTransform.MaxBits; b++)
            {
                int n = groupStarts[b + 1] - groupStarts[b];
                if (n == 0)
                {
                    continue;
                }

                Span<byte> group = symbols.AsSpan(groupStarts[b], n);
                offset += StaticRans.Decode(payload[offset..], group, offset);
                escapesExpected += group.Count((byte)KvtcChunkFormat.Escape);
            }

            if (payload.Length - offset < 4)
            {
                throw new InvalidKvDataException($"kvtc: escape count at payload offset {offset} is truncated.");
            }

            uint escapeCount = BinaryPrimitives.ReadUInt32LittleEndian(payload[offset..]);
            if (escapeCount != (uint)escapesExpected || (long)escapeCount * 2 != payload.Length - offset - 4)
            {
                throw new InvalidKvDataException($"kvtc: escape count at payload offset {offset} is {escapeCount}; the symbols hold {escapesExpected} escapes and {payload.Length - offset - 4} bytes follow (two per escape).");
            }

            ReadOnlySpan<byte> escapes = payload.Slice(offset + 4, escapesExpected * 2);
            int nextEscape = 0;
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
                            ? BinaryPrimitives.ReadInt16LittleEndian(escapes.Slice(2 * nextEscape++, 2))
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
