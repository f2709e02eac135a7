using System.Buffers;
using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using KvFetcher.Core;

namespace KvFetcher.Codecs.Entropy;

/// <summary>
/// An order-0 static-model rANS coder over bytes with two interleaved 32-bit states and byte-wise renormalization.
/// </summary>
/// <remarks>
/// Block format (all little-endian):
/// <code>
/// u8      scaleBits             frequencies sum to 2^scaleBits, 12..15
/// u8[32]  presence bitmap       bit s set when symbol s occurs
/// varint  freq[s]               for each present symbol in ascending order, LEB128, 1..2^scaleBits
/// u32     streamLength          bytes of the rANS stream that follows
/// u8[..]  stream                state 0 (u32), state 1 (u32), then renormalization bytes
/// </code>
/// Symbol i is coded with state i &amp; 1. The encoder runs backwards; the decoder reads forwards, checks every read
/// against the declared lengths, and requires both final states to equal the initial state and the stream to be
/// consumed exactly.
/// </remarks>
internal static partial class StaticRans
{
    public const int MinScaleBits = 12;
    public const int MaxScaleBits = 15;
    private const uint LowerBound = 1u << 23;
    private const int BitmapBytes = 32;

    /// <summary>Counts the bytes of <paramref name="symbols"/> into <paramref name="histogram"/> (256 entries, added to).</summary>
    public static void Count(ReadOnlySpan<byte> symbols, Span<int> histogram)
    {
        if (histogram.Length < 256)
        {
            throw new ArgumentException("The histogram needs 256 entries.", nameof(histogram));
        }

        foreach (byte s in symbols)
        {
            histogram[s]++;
        }
    }

    /// <summary>The order-0 entropy of <paramref name="histogram"/> in bits (a lower bound on the coded size).</summary>
    public static double EntropyBits(ReadOnlySpan<int> histogram)
    {
        long total = 0;
        foreach (int c in histogram)
        {
            total += c;
        }

        double bits = 0;
        foreach (int c in histogram)
        {
            if (c > 0)
            {
                bits += c * Math.Log2((double)total / c);
            }
        }

        return bits;
    }

    /// <summary>
    /// Encodes <paramref name="symbols"/> (at least one) with the model of <paramref name="histogram"/> (their counts)
    /// into <paramref name="destination"/>. Returns the bytes written, or -1 when the block does not fit.
    /// </summary>
    public static int TryEncode(ReadOnlySpan<byte> symbols, ReadOnlySpan<int> histogram, Span<byte> destination)
    {
        ArgumentOutOfRangeException.ThrowIfZero(symbols.Length, nameof(symbols));
        int scaleBits = Math.Clamp(BitOperations.Log2((uint)symbols.Length) - 3, MinScaleBits, MaxScaleBits);
        Span<int> freq = stackalloc int[256];
        Normalize(histogram, symbols.Length, scaleBits, freq);

        // Table.
        int headerLength = 1 + BitmapBytes;
        for (int s = 0; s < 256; s++)
        {
            if (freq[s] > 0)
            {
                headerLength += VarintLength((uint)freq[s]);
            }
        }

        int streamStart = headerLength + 4;
        if (destination.Length < streamStart + 8)
        {
            return -1;
        }

        destination[0] = (byte)scaleBits;
        Span<byte> bitmap = destination.Slice(1, BitmapBytes);
        bitmap.Clear();
        int pos = 1 + BitmapBytes;
        Span<int> cum = stackalloc int[256];
        int running = 0;
        for (int s = 0; s < 256; s++)
        {
            cum[s] = running;
            if (freq[s] > 0)
            {
                bitmap[s >> 3] |= (byte)(1 << (s & 7));
                pos += WriteVarint(destination[pos..], (uint)freq[s]);
                running += freq[s];
            }
        }

        // x / f without a division: q = (x * m) >> (32 + k), k = ceil(log2 f), m = ceil(2^(32 + k) / f) <= 2^33. For
        // x < 2^31 the product stays below 2^64 and the error x * (m - 2^(32 + k) / f) / 2^(32 + k) < 1 / (2f) keeps
        // the floor exact.
        Span<ulong> multipliers = stackalloc ulong[256];
        Span<int> shifts = stackalloc int[256];
        for (int s = 0; s < 256; s++)
        {
            if (freq[s] > 0)
            {
                multipliers[s] = DivisionMultiplier((uint)freq[s], out shifts[s]);
            }
        }

        // Stream, written backwards from the end of the destination.
        Span<byte> stream = destination[streamStart..];
        int tail = stream.Length;
        uint x0 = LowerBound;
        uint x1 = LowerBound;
        uint renormBase = (LowerBound >> scaleBits) << 8;
        for (int i = symbols.Length - 1; i >= 0; i--)
        {
            byte s = symbols[i];
            uint f = (uint)freq[s];
            uint x = (i & 1) == 0 ? x0 : x1;
            uint xMax = renormBase * f;
            while (x >= xMax)
            {
                if (tail <= 8)
                {
                    return -1;
                }

                stream[--tail] = (byte)x;
                x >>= 8;
            }

            uint q = (uint)((x * multipliers[s]) >> shifts[s]);
            x = (q << scaleBits) + (x - (q * f)) + (uint)cum[s];
            if ((i & 1) == 0)
            {
                x0 = x;
            }
            else
            {
                x1 = x;
            }
        }

        tail -= 8;
        BinaryPrimitives.WriteUInt32LittleEndian(stream.Slice(tail, 4), x0);
        BinaryPrimitives.WriteUInt32LittleEndian(stream.Slice(tail + 4, 4), x1);
        int streamLength = stream.Length - tail;
        stream.Slice(tail, streamLength).CopyTo(stream);
        BinaryPrimitives.WriteUInt32LittleEndian(destination.Slice(headerLength, 4), (uint)streamLength);
        return streamStart + streamLength;
    }

    /// <summary>
    /// Decodes exactly <c>symbols.Length</c> symbols from the block at the start of <paramref name="source"/>.
    /// Returns the bytes of <paramref name="source"/> the block occupies. <paramref name="baseOffset"/> (where
    /// <paramref name="source"/> starts in the enclosing payload) makes the offsets in error messages absolute.
    /// </summary>
    public static int Decode(ReadOnlySpan<byte> source, Span<byte> symbols, long baseOffset)
    {
        if (source.Length < 1 + BitmapBytes)
        {
            throw Error(baseOffset, "frequency table truncated", $"{source.Length} bytes left, the table needs at least {1 + BitmapBytes}");
        }

        int scaleBits = source[0];
        if (scaleBits is < MinScaleBits or > MaxScaleBits)
        {
            throw Error(baseOffset, "scale bits out of range", $"{scaleBits} is not in {MinScaleBits}..{MaxScaleBits}");
        }

        int total = 1 << scaleBits;
        ReadOnlySpan<byte> bitmap = source.Slice(1, BitmapBytes);
        int pos = 1 + BitmapBytes;
        Span<uint> freq = stackalloc uint[256];
        Span<uint> cum = stackalloc uint[256];
        long running = 0;
        for (int s = 0; s < 256; s++)
        {
            cum[s] = (uint)running;
            freq[s] = 0;
            if ((bitmap[s >> 3] & (1 << (s & 7))) == 0)
            {
                continue;
            }

            int read = ReadVarint(source[pos..], out uint f);
            if (read <= 0)
            {
                throw Error(baseOffset + pos, "frequency varint truncated or longer than 3 bytes", $"symbol {s}");
            }

            if (f == 0 || f > total)
            {
                throw Error(baseOffset + pos, "symbol frequency out of range", $"symbol {s} has {f}; allowed 1..{total}");
            }

            pos += read;
            freq[s] = f;
            running += f;
        }

        if (running != total)
        {
            throw Error(baseOffset + 1, "frequencies do not sum to 2^scaleBits", $"sum {running}, expected {total}");
        }

        if (source.Length - pos < 4)
        {
            throw Error(baseOffset + pos, "stream length truncated", $"{source.Length - pos} bytes left");
        }

        uint streamLength = BinaryPrimitives.ReadUInt32LittleEndian(source.Slice(pos, 4));
        pos += 4;
        if (streamLength < 8 || streamLength > source.Length - pos)
        {
            throw Error(baseOffset + pos - 4, "stream length out of range", $"{streamLength}; 8..{source.Length - pos} bytes are available");
        }

        ReadOnlySpan<byte> stream = source.Slice(pos, (int)streamLength);
        long streamOffset = baseOffset + pos;

        // Per slot: the symbol, and its frequency (high 16 bits) with the slot's offset in the symbol's range (low 16).
        uint[] slotsArray = ArrayPool<uint>.Shared.Rent(total);
        byte[] symbolsArray = ArrayPool<byte>.Shared.Rent(total);
        try
        {
            Span<uint> slots = slotsArray.AsSpan(0, total);
            Span<byte> slotSymbols = symbolsArray.AsSpan(0, total);
            for (int s = 0; s < 256; s++)
            {
                int start = (int)cum[s];
                int count = (int)freq[s];
                slotSymbols.Slice(start, count).Fill((byte)s);
                Span<uint> range = slots.Slice(start, count);
                for (int k = 0; k < range.Length; k++)
                {
                    range[k] = (freq[s] << 16) | (uint)k;
                }
            }

            uint x0 = BinaryPrimitives.ReadUInt32LittleEndian(stream);
            uint x1 = BinaryPrimitives.ReadUInt32LittleEndian(stream[4..]);
            if (x0 < LowerBound || x1 < LowerBound || x0 >= LowerBound << 8 || x1 >= LowerBound << 8)
            {
                throw Error(streamOffset, "initial rANS state out of range", $"states {x0:X8} and {x1:X8}, each must be in {LowerBound:X8}..{(LowerBound << 8) - 1:X8}");
            }

            int read = 8;
            uint mask = (uint)total - 1;
            int n = symbols.Length;
            int pairs = n >> 1;
            for (int i = 0; i < pairs; i++)
            {
                int slot0 = (int)(x0 & mask);
                int slot1 = (int)(x1 & mask);
                symbols[2 * i] = slotSymbols[slot0];
                symbols[(2 * i) + 1] = slotSymbols[slot1];
                x0 = Step(slots[slot0], x0, scaleBits);
                x1 = Step(slots[slot1], x1, scaleBits);
                if (x0 < LowerBound)
                {
                    read = Refill(stream, read, ref x0, streamOffset, 2 * i, n);
                }

                if (x1 < LowerBound)
                {
                    read = Refill(stream, read, ref x1, streamOffset, (2 * i) + 1, n);
                }
            }

            if ((n & 1) != 0)
            {
                int slot0 = (int)(x0 & mask);
                symbols[n - 1] = slotSymbols[slot0];
                x0 = Step(slots[slot0], x0, scaleBits);
                if (x0 < LowerBound)
                {
                    read = Refill(stream, read, ref x0, streamOffset, n - 1, n);
                }
            }

            if (read != stream.Length)
            {
                throw Error(streamOffset + read, "rANS stream has trailing bytes", $"{stream.Length - read} unread");
            }

            if (x0 != LowerBound || x1 != LowerBound)
            {
                throw Error(streamOffset, "rANS final states do not match (corrupt stream)", $"states {x0:X8} and {x1:X8}");
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(symbolsArray);
            ArrayPool<uint>.Shared.Return(slotsArray);
        }

        return pos + (int)streamLength;
    }

    /// <summary>One decoding step: the state before the symbol, from its slot entry and the state after it.</summary>
    /// <summary>
    /// The multiplier m and shift for <c>x / f == (x * m) &gt;&gt; shift</c>, exact for every x &lt; 2^31 and
    /// f in 1..2^15.
    /// </summary>
    internal static ulong DivisionMultiplier(uint f, out int shift)
    {
        int k = f == 1 ? 0 : BitOperations.Log2(f - 1) + 1;
        shift = 32 + k;
        return (((1UL << shift) - 1) / f) + 1;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Step(uint entry, uint x, int scaleBits) => ((entry >> 16) * (x >> scaleBits)) + (entry & 0xFFFF);

    /// <summary>Reads renormalization bytes into <paramref name="x"/> until it is back in range; returns the new read position.</summary>
    private static int Refill(ReadOnlySpan<byte> stream, int read, ref uint x, long streamOffset, int index, int count)
    {
        while (x < LowerBound)
        {
            if ((uint)read >= (uint)stream.Length)
            {
                throw Error(streamOffset + read, "rANS stream ends early", $"at symbol {index} of {count}");
            }

            x = (x << 8) | stream[read++];
        }

        return read;
    }

    /// <summary>
    /// Scales <paramref name="histogram"/> (counts summing to <paramref name="count"/>) to frequencies summing to
    /// 2^<paramref name="scaleBits"/>, every present symbol at least 1.
    /// </summary>
    internal static void Normalize(ReadOnlySpan<int> histogram, int count, int scaleBits, Span<int> freq)
    {
        int total = 1 << scaleBits;
        int sum = 0;
        int largest = -1;
        for (int s = 0; s < 256; s++)
        {
            int c = histogram[s];
            if (c <= 0)
            {
                freq[s] = 0;
                continue;
            }

            int f = Math.Max(1, (int)((long)c * total / count));
            freq[s] = f;
            sum += f;
            if (largest < 0 || c > histogram[largest])
            {
                largest = s;
            }
        }

        if (largest < 0)
        {
            throw new ArgumentException("The histogram is empty.", nameof(histogram));
        }

        if (sum < total)
        {
            freq[largest] += total - sum;
            return;
        }

        // Too much after rounding the rare symbols up: take it from the most frequent symbols (terminates because at
        // most 256 symbols are present and 2^scaleBits is far larger).
        int excess = sum - total;
        while (excess > 0)
        {
            int best = 0;
            for (int s = 1; s < 256; s++)
            {
                if (freq[s] > freq[best])
                {
                    best = s;
                }
            }

            int take = Math.Min(excess, Math.Max(1, (freq[best] - 1) / 2));
            freq[best] -= take;
            excess -= take;
        }
    }

    private static int VarintLength(uint value) => value < 0x80 ? 1 : value < 0x4000 ? 2 : 3;

    private static int WriteVarint(Span<byte> destination, uint value)
    {
        int i = 0;
        while (value >= 0x80)
        {
            destination[i++] = (byte)(value | 0x80);
            value >>= 7;
        }

        destination[i++] = (byte)value;
        return i;
    }

    /// <summary>Reads a LEB128 value of at most 3 bytes; returns the bytes read, or 0 when truncated or too long.</summary>
    private static int ReadVarint(ReadOnlySpan<byte> source, out uint value)
    {
        value = 0;
        for (int i = 0; i < 3 && i < source.Length; i++)
        {
            byte b = source[i];
            value |= (uint)(b & 0x7F) << (7 * i);
            if ((b & 0x80) == 0)
            {
                return i + 1;
            }
        }

        return 0;
    }

    private static InvalidKvDataException Error(long offset, string problem, string detail) =>
        new($"rANS block: {problem} at payload offset {offset}: {detail}.");
}
