using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using KvFetcher.Codecs.Entropy;
using KvFetcher.Core;

namespace KvFetcher.Codecs.Exact;

/// <summary>
/// Bit-exact lossless compression of the stored values: per (layer, K/V) block an optional token-axis prediction on
/// the integer bit patterns, byte-plane separation, and an order-0 static rANS coder per plane with a raw fallback.
/// </summary>
/// <remarks>
/// <para>
/// Stream format (codec parameters are empty; everything is in the payload, little-endian):
/// </para>
/// <code>
/// u8  version        1
/// u8  elementSize    2 (fp16, bf16) or 4 (fp32); must match the dtype
/// then, for each block b = layer * 2 + kind (0 = K, 1 = V), in order:
///   u8  predictor    0 = none, 1 = XOR with the previous token's value of the same channel, 2 = subtract it
///                    (modulo 2^(8 * elementSize)); token 0 is predicted from 0
///   for each byte plane p = 0 .. elementSize - 1 (p = 0 is the least significant byte of the residual):
///     u8  method     0 = raw: tokens * channels bytes follow
///                    1 = constant: one byte follows, the value of every symbol
///                    2 = rANS: a <see cref="StaticRans"/> block follows (table, u32 stream length, stream)
/// </code>
/// <para>
/// Plane p of a block holds byte p of each residual in token-major order ([token][kvHead][headDim]). The encoder
/// picks the predictor with the smallest order-0 entropy summed over the planes (estimated on up to 32 sampled token
/// rows), then per plane the smallest of the three methods. The decoder checks every field and length against the
/// shape and requires the payload to be consumed exactly; anything else raises <see cref="InvalidKvDataException"/>.
/// </para>
/// <para>
/// Measured on the bundled model's KV (256-token chunks): token-axis prediction does not pay (the high-byte entropy
/// rises from 5.5 to 5.9 bits with XOR or subtraction), so real KV takes predictor 0; the high byte (sign, exponent,
/// top mantissa bits) codes to about 5.5 bits for fp16 and 2.7 for bf16 while the low byte is incompressible mantissa
/// noise and stays raw: about 1.18x smaller than fp16 for fp16 input and 1.50x for bf16. Static per-context tables
/// (previous token's exponent, channel groups) gained under 1% after their table cost and were left out.
/// </para>
/// </remarks>
public sealed class ExactCodec : ILayerAddressableCodec
{
    private const byte Version = 1;
    private const int Predictors = 3;
    private const byte MethodRaw = 0;
    private const byte MethodConstant = 1;
    private const byte MethodRans = 2;

    /// <summary>Bytes beyond the plane size the rANS scratch needs (table, length, states, slack).</summary>
    private const int RansSlack = 1024;

    public static ExactCodec Instance { get; } = new();

    public CodecId Id => CodecId.Exact;

    public string Name => CodecId.Exact.ToName();

    public IReadOnlyList<int> Levels { get; } = [0];

    public int DefaultLevel => 0;

    public bool IsLossless(int level) => true;

    /// <summary>
    /// The version and element size, then per (layer, K/V) block the predictor and per byte plane its method and at
    /// most the plane itself (a plane that would code larger is stored raw).
    /// </summary>
    public long GetMaxEncodedLength(KvShape shape, DType dtype, int level)
    {
        shape.Validate();
        long planeBytes = (long)shape.Tokens * shape.Channels;
        return 2 + ((long)shape.Layers * 2 * (1 + (dtype.SizeOf() * (1 + planeBytes))));
    }

    public void Encode(ReadOnlySpan<byte> kv, KvShape shape, DType dtype, long tokenStart, int level, IBufferWriter<byte> parameters, IBufferWriter<byte> payload)
    {
        CodecChecks.Input(kv, shape, dtype);
        CodecChecks.TokenStart(tokenStart);
        CodecChecks.Level(this, level);
        ArgumentNullException.ThrowIfNull(payload);
        EnsureLittleEndian();
        int elementSize = dtype.SizeOf();
        int n = BlockValues(shape, elementSize);
        int channels = shape.Channels;
        int blockBytes = n * elementSize;

        Span<byte> header = payload.GetSpan(2);
        header[0] = Version;
        header[1] = (byte)elementSize;
        payload.Advance(2);

        byte[] planesArray = ArrayPool<byte>.Shared.Rent(blockBytes);
        byte[] codedArray = ArrayPool<byte>.Shared.Rent(n + RansSlack);
        try
        {
            Span<byte> planes = planesArray.AsSpan(0, blockBytes);
            Span<byte> coded = codedArray.AsSpan(0, n + RansSlack);
            Span<int> histograms = stackalloc int[Predictors * 4 * 256];
            for (int block = 0; block < shape.Layers * 2; block++)
            {
                ReadOnlySpan<byte> source = kv.Slice(block * blockBytes, blockBytes);
                histograms.Clear();
                int predictor;
                if (elementSize == 2)
                {
                    ReadOnlySpan<ushort> values = MemoryMarshal.Cast<byte, ushort>(source);
                    predictor = ChoosePredictor(values, shape.Tokens, channels, histograms);
                    histograms.Clear();
                    Split16(values, channels, predictor, planes[..n], planes[n..], histograms[..256], histograms.Slice(256, 256));
                }
                else
                {
                    ReadOnlySpan<uint> values = MemoryMarshal.Cast<byte, uint>(source);
                    predictor = ChoosePredictor(values, shape.Tokens, channels, histograms);
                    histograms.Clear();
                    Split(values, channels, predictor, planes, histograms);
                }

                WriteByte(payload, (byte)predictor);
                for (int p = 0; p < elementSize; p++)
                {
                    EncodePlane(planes.Slice(p * n, n), histograms.Slice(p * 256, 256), coded, payload);
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(codedArray);
            ArrayPool<byte>.Shared.Return(planesArray);
        }
    }

    public void Decode(ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, KvShape shape, DType dtype, long tokenStart, int level, Span<byte> destination)
    {
        CodecChecks.Output(destination, shape, dtype);
        CodecChecks.TokenStart(tokenStart);
        CodecChecks.Level(this, level);
        Decode(parameters, payload, shape, dtype, destination, layerEnds: []);
    }

    /// <summary>
    /// The 2-byte stream header is the prefix; each layer's K and V blocks follow in layer order and are coded on their
    /// own (no state crosses a block), so the header followed by layers [a, b) is the stream of the chunk cut to them.
    /// Finds the ends by decoding the stream (the check a reader would make), into pooled scratch.
    /// </summary>
    public int GetLayerEnds(ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, KvShape shape, DType dtype, int level, Span<long> layerEnds)
    {
        CodecChecks.Level(this, level);
        shape.Validate();
        if (layerEnds.Length != shape.Layers)
        {
            throw new ArgumentException($"exact: {layerEnds.Length} layer ends for {shape.Layers} layers.", nameof(layerEnds));
        }

        int bytes = checked((int)(shape.Elements * dtype.SizeOf()));
        byte[] scratch = ArrayPool<byte>.Shared.Rent(bytes);
        try
        {
            Decode(parameters, payload, shape, dtype, scratch.AsSpan(0, bytes), layerEnds);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(scratch);
        }

        return 2;
    }

    /// <summary>Decodes the checked arguments; writes where each layer's blocks end when <paramref name="layerEnds"/> is not empty.</summary>
    private static void Decode(ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, KvShape shape, DType dtype, Span<byte> destination, Span<long> layerEnds)
    {
        EnsureLittleEndian();
        if (!parameters.IsEmpty)
        {
            throw new InvalidKvDataException($"exact: codec parameters must be empty; found {parameters.Length} bytes.");
        }

        int elementSize = dtype.SizeOf();
        int n = BlockValues(shape, elementSize);
        int channels = shape.Channels;
        int blockBytes = n * elementSize;
        if (payload.Length < 2)
        {
            throw new InvalidKvDataException($"exact: payload of {payload.Length} bytes is shorter than its 2-byte header.");
        }

        if (payload[0] != Version)
        {
            throw new InvalidKvDataException($"exact: unsupported stream version {payload[0]} at payload offset 0; expected {Version}.");
        }

        if (payload[1] != elementSize)
        {
            throw new InvalidKvDataException($"exact: element size {payload[1]} at payload offset 1 does not match {elementSize} for {dtype.ToShortName()}.");
        }

        int pos = 2;
        byte[] planesArray = ArrayPool<byte>.Shared.Rent(blockBytes);
        try
        {
            Span<byte> planes = planesArray.AsSpan(0, blockBytes);
            for (int block = 0; block < shape.Layers * 2; block++)
            {
                string kind = (block & 1) == 0 ? "K" : "V";
                if (pos >= payload.Length)
                {
                    throw new InvalidKvDataException($"exact: payload truncated at offset {pos}: layer {block >> 1} {kind} predictor missing.");
                }

                int predictor = payload[pos];
                if (predictor >= Predictors)
                {
                    throw new InvalidKvDataException($"exact: layer {block >> 1} {kind} predictor {predictor} at payload offset {pos} is not 0, 1 or 2.");
                }

                pos++;
                for (int p = 0; p < elementSize; p++)
                {
                    pos = DecodePlane(payload, pos, planes.Slice(p * n, n), block, kind, p);
                }

                if ((block & 1) == 1 && !layerEnds.IsEmpty)
                {
                    layerEnds[block >> 1] = pos;
                }

                Span<byte> target = destination.Slice(block * blockBytes, blockBytes);
                if (elementSize == 2)
                {
                    Join16(planes[..n], planes[n..], MemoryMarshal.Cast<byte, ushort>(target), channels, predictor);
                }
                else
                {
                    Join(planes, MemoryMarshal.Cast<byte, uint>(target), channels, predictor);
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(planesArray);
        }

        if (pos != payload.Length)
        {
            throw new InvalidKvDataException($"exact: payload has {payload.Length - pos} trailing bytes after offset {pos}.");
        }
    }

    private static void EnsureLittleEndian()
    {
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("exact: the codec reads the little-endian KV layout with native loads.");
        }
    }

    private static int BlockValues(KvShape shape, int elementSize)
    {
        long values = (long)shape.Tokens * shape.Channels;
        if (values * elementSize > Array.MaxLength - RansSlack)
        {
            throw new ArgumentException($"exact: one (layer, K/V) block of {shape} holds {values} values; at most {(Array.MaxLength - RansSlack) / elementSize} are supported.", nameof(shape));
        }

        return (int)values;
    }

    private static T Residual<T>(T value, T previous, int predictor)
        where T : unmanaged, IBinaryInteger<T> => predictor switch
        {
            1 => value ^ previous,
            2 => value - previous,
            _ => value,
        };

    /// <summary>
    /// Picks the predictor whose residuals have the smallest order-0 entropy over up to 32 sampled token rows
    /// (and never 0-versus-0 ties: the simpler predictor wins unless another saves at least 0.1%).
    /// </summary>
    private static int ChoosePredictor<T>(ReadOnlySpan<T> values, int tokens, int channels, Span<int> histograms)
        where T : unmanaged, IBinaryInteger<T>
    {
        if (tokens < 2)
        {
            return 0;
        }

        int size = Unsafe.SizeOf<T>();
        int step = Math.Max(1, (tokens - 1) / 32);
        for (int t = 1; t < tokens; t += step)
        {
            ReadOnlySpan<T> row = values.Slice(t * channels, channels);
            ReadOnlySpan<T> previousRow = values.Slice((t - 1) * channels, channels);
            for (int c = 0; c < channels; c++)
            {
                T value = row[c];
                T previous = previousRow[c];
                T xor = value ^ previous;
                T sub = value - previous;
                for (int p = 0; p < size; p++)
                {
                    int shift = 8 * p;
                    histograms[(p * 256) + byte.CreateTruncating(value >> shift)]++;
                    histograms[((4 + p) * 256) + byte.CreateTruncating(xor >> shift)]++;
                    histograms[((8 + p) * 256) + byte.CreateTruncating(sub >> shift)]++;
                }
            }
        }

        int best = 0;
        double bestBits = double.MaxValue;
        for (int predictor = 0; predictor < Predictors; predictor++)
        {
            double bits = 0;
            for (int p = 0; p < size; p++)
            {
                bits += StaticRans.EntropyBits(histograms.Slice(((predictor * 4) + p) * 256, 256));
            }

            if (bits < bestBits * 0.999)
            {
                best = predictor;
                bestBits = bits;
            }
        }

        return best;
    }

    /// <summary>Writes byte p of every residual to plane p of <paramref name="planes"/> and counts each plane.</summary>
    private static void Split<T>(ReadOnlySpan<T> values, int channels, int predictor, Span<byte> planes, Span<int> histograms)
        where T : unmanaged, IBinaryInteger<T>
    {
        int n = values.Length;
        int size = Unsafe.SizeOf<T>();
        for (int i = 0; i < n; i++)
        {
            T residual = i >= channels ? Residual(values[i], values[i - channels], predictor) : values[i];
            for (int p = 0; p < size; p++)
            {
                byte b = byte.CreateTruncating(residual >> (8 * p));
                planes[(p * n) + i] = b;
                histograms[(p * 256) + b]++;
            }
        }
    }

    /// <summary>The 16-bit case of <see cref="Split{T}"/>: low bytes to one plane, high bytes to the other.</summary>
    private static void Split16(ReadOnlySpan<ushort> values, int channels, int predictor, Span<byte> low, Span<byte> high, Span<int> lowCounts, Span<int> highCounts)
    {
        int n = values.Length;
        low = low[..n];
        high = high[..n];
        for (int i = 0; i < n; i++)
        {
            int value = values[i];
            if (i >= channels)
            {
                int previous = values[i - channels];
                value = predictor switch
                {
                    1 => value ^ previous,
                    2 => value - previous,
                    _ => value,
                };
            }

            byte l = (byte)value;
            byte h = (byte)(value >> 8);
            low[i] = l;
            high[i] = h;
            lowCounts[l]++;
            highCounts[h]++;
        }
    }

    /// <summary>The 16-bit case of <see cref="Join{T}"/>.</summary>
    private static void Join16(ReadOnlySpan<byte> low, ReadOnlySpan<byte> high, Span<ushort> values, int channels, int predictor)
    {
        int n = values.Length;
        low = low[..n];
        high = high[..n];
        int first = Math.Min(channels, n);
        for (int i = 0; i < first; i++)
        {
            values[i] = (ushort)(low[i] | (high[i] << 8));
        }

        switch (predictor)
        {
            case 1:
                for (int i = first; i < n; i++)
                {
                    values[i] = (ushort)((low[i] | (high[i] << 8)) ^ values[i - channels]);
                }

                break;
            case 2:
                for (int i = first; i < n; i++)
                {
                    values[i] = (ushort)((low[i] | (high[i] << 8)) + values[i - channels]);
                }

                break;
            default:
                for (int i = first; i < n; i++)
                {
                    values[i] = (ushort)(low[i] | (high[i] << 8));
                }

                break;
        }
    }

    /// <summary>Reassembles the residuals from the planes and undoes the prediction, token by token.</summary>
    private static void Join<T>(ReadOnlySpan<byte> planes, Span<T> values, int channels, int predictor)
        where T : unmanaged, IBinaryInteger<T>
    {
        int n = values.Length;
        int size = Unsafe.SizeOf<T>();
        for (int i = 0; i < n; i++)
        {
            T residual = T.CreateTruncating(planes[i]);
            for (int p = 1; p < size; p++)
            {
                residual |= T.CreateTruncating(planes[(p * n) + i]) << (8 * p);
            }

            if (i >= channels && predictor != 0)
            {
                T previous = values[i - channels];
                residual = predictor == 1 ? residual ^ previous : residual + previous;
            }

            values[i] = residual;
        }
    }

    private static int DecodePlane(ReadOnlySpan<byte> payload, int pos, Span<byte> plane, int block, string kind, int p)
    {
        int n = plane.Length;
        if (pos >= payload.Length)
        {
            throw new InvalidKvDataException($"exact: payload truncated at offset {pos}: layer {block >> 1} {kind} byte plane {p} method missing.");
        }

        byte method = payload[pos];
        int methodOffset = pos;
        pos++;
        switch (method)
        {
            case MethodRaw:
                if (payload.Length - pos < n)
                {
                    throw new InvalidKvDataException($"exact: payload truncated at offset {pos}: layer {block >> 1} {kind} byte plane {p} needs {n} raw bytes, {payload.Length - pos} left.");
                }

                payload.Slice(pos, n).CopyTo(plane);
                return pos + n;
            case MethodConstant:
                if (pos >= payload.Length)
                {
                    throw new InvalidKvDataException($"exact: payload truncated at offset {pos}: layer {block >> 1} {kind} byte plane {p} constant missing.");
                }

                plane.Fill(payload[pos]);
                return pos + 1;
            case MethodRans:
                try
                {
                    return pos + StaticRans.Decode(payload[pos..], plane, pos);
                }
                catch (InvalidKvDataException ex)
                {
                    throw new InvalidKvDataException($"exact: layer {block >> 1} {kind} byte plane {p}: {ex.Message}", ex);
                }

            default:
                throw new InvalidKvDataException($"exact: layer {block >> 1} {kind} byte plane {p} method {method} at payload offset {methodOffset} is not 0, 1 or 2.");
        }
    }

    private static void EncodePlane(ReadOnlySpan<byte> plane, ReadOnlySpan<int> histogram, Span<byte> coded, IBufferWriter<byte> payload)
    {
        int n = plane.Length;
        int present = 0;
        int symbol = 0;
        for (int s = 0; s < 256; s++)
        {
            if (histogram[s] > 0)
            {
                present++;
                symbol = s;
            }
        }

        if (present == 1)
        {
            WriteByte(payload, MethodConstant);
            WriteByte(payload, (byte)symbol);
            return;
        }

        // The table costs at least 37 bytes; skip the coder when even the entropy bound would not pay for it.
        double bound = (StaticRans.EntropyBits(histogram) / 8) + 37 + present;
        int length = bound < n ? StaticRans.TryEncode(plane, histogram, coded) : -1;
        if (length > 0 && length < n)
        {
            WriteByte(payload, MethodRans);
            payload.Write(coded[..length]);
        }
        else
        {
            WriteByte(payload, MethodRaw);
            payload.Write(plane);
        }
    }

    private static void WriteByte(IBufferWriter<byte> writer, byte value)
    {
        writer.GetSpan(1)[0] = value;
        writer.Advance(1);
    }
}
