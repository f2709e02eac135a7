using System.Buffers.Binary;
using KvFetcher.Core;

namespace KvFetcher.Codecs.Entropy;

/// <summary>
/// Segmented rANS: one frequency table (<see cref="SegmentTable"/>) shared by many segments, each an independent
/// stream that decodes on its own (a GPU thread per segment, or CPU threads side by side).
/// </summary>
/// <remarks>
/// Table format (the block format's table with a fixed scale): <c>u8 scaleBits</c> (always
/// <see cref="SegmentScaleBits"/>), <c>u8[32]</c> presence bitmap, a LEB128 frequency per present symbol ascending.
/// Segment stream: <c>u32 state 0, u32 state 1</c>, then renormalization bytes; symbol i of the segment is coded with
/// state i &amp; 1, the encoder starts both states at <see cref="StateLowerBound"/> and the decoder requires both to end
/// there with every byte consumed. The fixed 12-bit scale keeps a decoder's slot table at 4 KiB per table (a GPU keeps
/// every bit width's table in shared memory).
/// </remarks>
internal static partial class StaticRans
{
    /// <summary>The scale of every segmented table: frequencies sum to 2^12.</summary>
    public const int SegmentScaleBits = 12;

    /// <summary>Slots of a segmented table (2^<see cref="SegmentScaleBits"/>).</summary>
    public const int SegmentSlots = 1 << SegmentScaleBits;

    /// <summary>The most bytes a table takes (scale, bitmap, 256 three-byte varints).</summary>
    public const int MaxTableBytes = 1 + BitmapBytes + (256 * 3);

    /// <summary>Both states' value before the first encoded symbol and after the last decoded one; decoding keeps them in [L, 256 L).</summary>
    public const uint StateLowerBound = LowerBound;

    /// <summary>
    /// A segmented table: the frequencies of 256 symbols summing to 2^<see cref="SegmentScaleBits"/>, with what the
    /// encoder (division multipliers) and the decoder (slot tables) need, built once per table.
    /// </summary>
    internal sealed class SegmentTable
    {
        private readonly uint[] _frequencies = new uint[256];
        private readonly uint[] _cumulative = new uint[256];
        private readonly ulong[] _multipliers = new ulong[256];
        private readonly int[] _shifts = new int[256];
        private readonly byte[] _slotSymbols = new byte[SegmentSlots];
        private readonly uint[] _slotEntries = new uint[SegmentSlots];

        /// <summary>Each symbol's frequency (0 when absent).</summary>
        public ReadOnlySpan<uint> Frequencies => _frequencies;

        /// <summary>Each symbol's cumulative start (the sum of the frequencies of the symbols below it).</summary>
        public ReadOnlySpan<uint> Cumulative => _cumulative;

        /// <summary>The symbol of every slot (2^<see cref="SegmentScaleBits"/> entries).</summary>
        public ReadOnlySpan<byte> SlotSymbols => _slotSymbols;

        /// <summary>Makes this the table of <paramref name="histogram"/> (counts of <paramref name="count"/> symbols, at least one).</summary>
        public void Build(ReadOnlySpan<int> histogram, int count)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
            Span<int> freq = stackalloc int[256];
            Normalize(histogram, count, SegmentScaleBits, freq);
            for (int s = 0; s < 256; s++)
            {
                _frequencies[s] = (uint)freq[s];
            }

            Complete();
        }

        /// <summary>
        /// Makes this the table at the start of <paramref name="source"/>; returns the bytes it takes. Anything malformed throws
        /// <see cref="InvalidKvDataException"/> naming its offset (<paramref name="baseOffset"/> + position).
        /// </summary>
        public int Read(ReadOnlySpan<byte> source, long baseOffset)
        {
            if (source.Length < 1 + BitmapBytes)
            {
                throw Error(baseOffset, "frequency table truncated", $"{source.Length} bytes left, the table needs at least {1 + BitmapBytes}");
            }

            if (source[0] != SegmentScaleBits)
            {
                throw Error(baseOffset, "scale bits of a segmented table", $"{source[0]}; segmented tables have {SegmentScaleBits}");
            }

            _frequencies.AsSpan().Clear();
            ReadOnlySpan<byte> bitmap = source.Slice(1, BitmapBytes);
            int pos = 1 + BitmapBytes;
            long running = 0;
            for (int s = 0; s < 256; s++)
            {
                if ((bitmap[s >> 3] & (1 << (s & 7))) == 0)
                {
                    continue;
                }

                int read = ReadVarint(source[pos..], out uint f);
                if (read <= 0)
                {
                    throw Error(baseOffset + pos, "frequency varint truncated or longer than 3 bytes", $"symbol {s}");
                }

                if (f == 0 || f > SegmentSlots)
                {
                    throw Error(baseOffset + pos, "symbol frequency out of range", $"symbol {s} has {f}; allowed 1..{SegmentSlots}");
                }

                pos += read;
                _frequencies[s] = f;
                running += f;
            }

            if (running != SegmentSlots)
            {
                throw Error(baseOffset + 1, "frequencies do not sum to 2^scaleBits", $"sum {running}, expected {SegmentSlots}");
            }

            Complete();
            return pos;
        }

        /// <summary>Writes the table to <paramref name="destination"/> (at least <see cref="MaxTableBytes"/>); returns the bytes written.</summary>
        public int Write(Span<byte> destination)
        {
            destination[0] = SegmentScaleBits;
            Span<byte> bitmap = destination.Slice(1, BitmapBytes);
            bitmap.Clear();
            int pos = 1 + BitmapBytes;
            for (int s = 0; s < 256; s++)
            {
                if (_frequencies[s] > 0)
                {
                    bitmap[s >> 3] |= (byte)(1 << (s & 7));
                    pos += WriteVarint(destination[pos..], _frequencies[s]);
                }
            }

            return pos;
        }

        /// <summary>
        /// Encodes <paramref name="symbols"/> (at least one, every one present in the table) as one segment stream into
        /// <paramref name="destination"/>; returns the bytes written, or -1 when they do not fit.
        /// </summary>
        public int TryEncode(ReadOnlySpan<byte> symbols, Span<byte> destination)
        {
            ArgumentOutOfRangeException.ThrowIfZero(symbols.Length, nameof(symbols));
            int tail = destination.Length;
            uint x0 = LowerBound;
            uint x1 = LowerBound;
            const uint RenormBase = (LowerBound >> SegmentScaleBits) << 8;
            for (int i = symbols.Length - 1; i >= 0; i--)
            {
                byte s = symbols[i];
                uint f = _frequencies[s];
                if (f == 0)
                {
                    throw new ArgumentException($"Symbol {s} is not in the table.", nameof(symbols));
                }

                uint x = (i & 1) == 0 ? x0 : x1;
                uint xMax = RenormBase * f;
                while (x >= xMax)
                {
                    if (tail <= 8)
                    {
                        return -1;
                    }

                    destination[--tail] = (byte)x;
                    x >>= 8;
                }

                uint q = (uint)((x * _multipliers[s]) >> _shifts[s]);
                x = (q << SegmentScaleBits) + (x - (q * f)) + _cumulative[s];
                if ((i & 1) == 0)
                {
                    x0 = x;
                }
                else
                {
                    x1 = x;
                }
            }

            if (tail < 8)
            {
                return -1;
            }

            tail -= 8;
            BinaryPrimitives.WriteUInt32LittleEndian(destination.Slice(tail, 4), x0);
            BinaryPrimitives.WriteUInt32LittleEndian(destination.Slice(tail + 4, 4), x1);
            int length = destination.Length - tail;
            destination.Slice(tail, length).CopyTo(destination);
            return length;
        }

        /// <summary>
        /// Decodes exactly <c>symbols.Length</c> symbols from the segment <paramref name="stream"/> (all of it: a stream
        /// with bytes left over, too few bytes or final states other than the initial one is refused with
        /// <see cref="InvalidKvDataException"/>; <paramref name="baseOffset"/> is where the stream starts in the payload).
        /// </summary>
        public void Decode(ReadOnlySpan<byte> stream, Span<byte> symbols, long baseOffset)
        {
            if (stream.Length < 8)
            {
                throw Error(baseOffset, "segment stream shorter than its two states", $"{stream.Length} bytes");
            }

            uint x0 = BinaryPrimitives.ReadUInt32LittleEndian(stream);
            uint x1 = BinaryPrimitives.ReadUInt32LittleEndian(stream[4..]);
            if (x0 < LowerBound || x1 < LowerBound || x0 >= LowerBound << 8 || x1 >= LowerBound << 8)
            {
                throw Error(baseOffset, "initial rANS state out of range", $"states {x0:X8} and {x1:X8}, each must be in {LowerBound:X8}..{(LowerBound << 8) - 1:X8}");
            }

            const uint Mask = SegmentSlots - 1;
            int read = 8;
            int n = symbols.Length;
            int pairs = n >> 1;
            ReadOnlySpan<byte> slotSymbols = _slotSymbols;
            ReadOnlySpan<uint> slots = _slotEntries;
            for (int i = 0; i < pairs; i++)
            {
                int slot0 = (int)(x0 & Mask);
                int slot1 = (int)(x1 & Mask);
                symbols[2 * i] = slotSymbols[slot0];
                symbols[(2 * i) + 1] = slotSymbols[slot1];
                x0 = Step(slots[slot0], x0, SegmentScaleBits);
                x1 = Step(slots[slot1], x1, SegmentScaleBits);
                if (x0 < LowerBound)
                {
                    read = Refill(stream, read, ref x0, baseOffset, 2 * i, n);
                }

                if (x1 < LowerBound)
                {
                    read = Refill(stream, read, ref x1, baseOffset, (2 * i) + 1, n);
                }
            }

            if ((n & 1) != 0)
            {
                int slot0 = (int)(x0 & Mask);
                symbols[n - 1] = slotSymbols[slot0];
                x0 = Step(slots[slot0], x0, SegmentScaleBits);
                if (x0 < LowerBound)
                {
                    read = Refill(stream, read, ref x0, baseOffset, n - 1, n);
                }
            }

            if (read != stream.Length)
            {
                throw Error(baseOffset + read, "segment stream has trailing bytes", $"{stream.Length - read} unread");
            }

            if (x0 != LowerBound || x1 != LowerBound)
            {
                throw Error(baseOffset, "rANS final states do not match (corrupt segment)", $"states {x0:X8} and {x1:X8}");
            }
        }

        private void Complete()
        {
            uint running = 0;
            for (int s = 0; s < 256; s++)
            {
                uint f = _frequencies[s];
                _cumulative[s] = running;
                _multipliers[s] = 0;
                if (f == 0)
                {
                    continue;
                }

                _multipliers[s] = DivisionMultiplier(f, out _shifts[s]);
                _slotSymbols.AsSpan((int)running, (int)f).Fill((byte)s);
                for (uint k = 0; k < f; k++)
                {
                    _slotEntries[running + k] = (f << 16) | k;
                }

                running += f;
            }
        }
    }
}
