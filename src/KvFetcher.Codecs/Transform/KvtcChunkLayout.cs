using System.Buffers.Binary;
using KvFetcher.Codecs.Entropy;
using KvFetcher.Core;

namespace KvFetcher.Codecs.Transform;

/// <summary>
/// A <c>kvtc</c> chunk's layout (<see cref="KvtcChunkFormat"/>), read and checked on the host before a byte of a
/// segment is decoded: the transform, the exact tokens, every bit width's frequency table and every rANS segment's
/// place in the payload, its symbols, its escapes and where its first symbol goes. The CPU decoder and the GPU
/// decoder both decode from it; after <see cref="Read(ReadOnlySpan{byte}, ReadOnlySpan{byte}, KvShape, DType, int)"/> every offset and length in it lies within the payload, the
/// segments tile each bit width's symbols and the escapes add up, so a decoder only has to check each segment's own
/// stream (its bytes consumed exactly, its final states, its escape count). One instance is reused chunk after chunk.
/// </summary>
public sealed class KvtcChunkLayout
{
    /// <summary>Ints per segment in <see cref="Segments"/>.</summary>
    public const int SegmentFields = 9;

    /// <summary><see cref="Segments"/> field: the stream's payload offset.</summary>
    public const int StreamOffsetField = 0;

    /// <summary><see cref="Segments"/> field: the stream's bytes.</summary>
    public const int StreamBytesField = 1;

    /// <summary><see cref="Segments"/> field: the segment's symbols.</summary>
    public const int SymbolsField = 2;

    /// <summary><see cref="Segments"/> field: the index of the segment's first escape among the chunk's escapes.</summary>
    public const int FirstEscapeField = 3;

    /// <summary><see cref="Segments"/> field: the escapes among the segment's symbols.</summary>
    public const int EscapesField = 4;

    /// <summary><see cref="Segments"/> field: the bit width of the segment's symbols (1..7).</summary>
    public const int BitsField = 5;

    /// <summary><see cref="Segments"/> field: the block of the segment's first symbol.</summary>
    public const int BlockField = 6;

    /// <summary><see cref="Segments"/> field: the coded token (0 = the first after the exact head) of the segment's first symbol.</summary>
    public const int TokenField = 7;

    /// <summary><see cref="Segments"/> field: the first symbol's index among its block's components of its width.</summary>
    public const int ComponentField = 8;

    private readonly StaticRans.SegmentTable?[] _tables = new StaticRans.SegmentTable?[KvtcTransform.MaxBits + 1];
    private readonly bool[] _present = new bool[KvtcTransform.MaxBits + 1];
    private readonly long[] _symbolStarts = new long[KvtcTransform.MaxBits + 2];
    private int[] _segments = new int[64 * SegmentFields];

    /// <summary>The transform the chunk was coded with.</summary>
    public KvtcTransform Transform { get; private set; } = null!;

    public int Level { get; private set; }

    public int Tokens { get; private set; }

    /// <summary>Tokens at the start of every plane stored exactly.</summary>
    public int ExactHead { get; private set; }

    /// <summary>Tokens at the end of every plane stored exactly.</summary>
    public int ExactTail { get; private set; }

    /// <summary>The transform-coded tokens of every plane: [<see cref="ExactHead"/>, Tokens - <see cref="ExactTail"/>).</summary>
    public int Coded => Tokens - ExactHead - ExactTail;

    /// <summary>The payload's exact values (at its start): per plane the head rows, then the tail rows.</summary>
    public int ExactBytes { get; private set; }

    public int SegmentCount { get; private set; }

    /// <summary><see cref="SegmentFields"/> ints per segment (the <c>*Field</c> constants), bit widths ascending, segments in order.</summary>
    public ReadOnlySpan<int> Segments => _segments.AsSpan(0, SegmentCount * SegmentFields);

    /// <summary>Where the i16 escapes start in the payload.</summary>
    public int EscapeOffset { get; private set; }

    public int EscapeCount { get; private set; }

    /// <summary>Where bit width <paramref name="bits"/>'s symbols start among the chunk's symbols (widths ascending); <c>bits + 1</c> gives its end.</summary>
    public long SymbolStart(int bits) => _symbolStarts[bits];

    /// <summary>All symbols of the chunk.</summary>
    public long SymbolCount => _symbolStarts[KvtcTransform.MaxBits + 1];

    /// <summary>Whether bit width <paramref name="bits"/> has symbols (and so a table).</summary>
    public bool HasTable(int bits) => _present[bits];

    /// <summary>
    /// Reads and checks a chunk coded with a loaded transform (<see cref="KvtcTransforms"/>): anything malformed throws
    /// <see cref="InvalidKvDataException"/> naming the field and its offset.
    /// </summary>
    /// <remarks><paramref name="dtype"/>: the KV type the chunk is decoded to, which its exact values are stored in.</remarks>
    public void Read(ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, KvShape shape, DType dtype, int level) => Read(parameters, payload, shape, dtype, level, null);

    /// <summary>
    /// The decoder's tables for a GPU: per bit width b = 1..7 (index b - 1; zeros where b has no symbols) the symbol of
    /// each of the 4,096 slots, and per symbol its frequency (high 16 bits) and cumulative start (low 16 bits).
    /// </summary>
    public void CopyDecodeTables(Span<byte> slotSymbols, Span<uint> symbolEntries)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(slotSymbols.Length, KvtcTransform.MaxBits * StaticRans.SegmentSlots, nameof(slotSymbols));
        ArgumentOutOfRangeException.ThrowIfLessThan(symbolEntries.Length, KvtcTransform.MaxBits * 256, nameof(symbolEntries));
        for (int b = 1; b <= KvtcTransform.MaxBits; b++)
        {
            Span<byte> slots = slotSymbols.Slice((b - 1) * StaticRans.SegmentSlots, StaticRans.SegmentSlots);
            Span<uint> entries = symbolEntries.Slice((b - 1) * 256, 256);
            StaticRans.SegmentTable? table = _present[b] ? _tables[b] : null;
            if (table is null)
            {
                slots.Clear();
                entries.Clear();
                continue;
            }

            table.SlotSymbols.CopyTo(slots);
            for (int s = 0; s < 256; s++)
            {
                entries[s] = (table.Frequencies[s] << 16) | table.Cumulative[s];
            }
        }
    }

    /// <summary>Bit width <paramref name="bits"/>'s table (it has symbols).</summary>
    internal StaticRans.SegmentTable Table(int bits) => _tables[bits]!;

    internal void Read(ReadOnlySpan<byte> parameters, ReadOnlySpan<byte> payload, KvShape shape, DType dtype, int level, KvtcTransform? bound)
    {
        SegmentCount = 0;
        Array.Clear(_present);
        (KvtcChunkFormat.Header header, KvtcTransform transform) = KvtcChunkFormat.Read(parameters, shape, level, bound);
        Transform = transform;
        Level = level;
        Tokens = shape.Tokens;
        ExactHead = header.ExactHead;
        ExactTail = header.ExactTail;
        int planes = shape.Layers * 2;
        long exactBytes = (long)planes * (ExactHead + ExactTail) * shape.Channels * dtype.SizeOf();
        if (payload.Length < exactBytes)
        {
            throw new InvalidKvDataException($"kvtc: payload holds {payload.Length} bytes; its exact tokens alone take {exactBytes}.");
        }

        ExactBytes = (int)exactBytes;
        int coded = Coded;
        ReadOnlySpan<int> counts = transform.WidthCounts(level);
        int blocks = transform.Blocks;
        _symbolStarts[0] = 0;
        _symbolStarts[1] = 0;
        for (int b = 1; b <= KvtcTransform.MaxBits; b++)
        {
            long n = 0;
            for (int block = 0; block < blocks; block++)
            {
                n += (long)counts[(b * blocks) + block] * coded;
            }

            _symbolStarts[b + 1] = _symbolStarts[b] + n;
        }

        if (coded == 0)
        {
            EscapeOffset = ExactBytes;
            EscapeCount = 0;
            if (payload.Length != ExactBytes)
            {
                throw new InvalidKvDataException($"kvtc: payload holds {payload.Length} bytes; a chunk of exact tokens only takes {ExactBytes}.");
            }

            return;
        }

        long offset = ExactBytes;
        long escapes = 0;
        for (int b = 1; b <= KvtcTransform.MaxBits; b++)
        {
            long n = _symbolStarts[b + 1] - _symbolStarts[b];
            if (n == 0)
            {
                continue;
            }

            StaticRans.SegmentTable table = _tables[b] ??= new StaticRans.SegmentTable();
            offset += table.Read(payload[(int)offset..], offset);
            _present[b] = true;
            if (payload.Length - offset < 4)
            {
                throw new InvalidKvDataException($"kvtc: segment count of bit width {b} at payload offset {offset} is truncated.");
            }

            uint declared = BinaryPrimitives.ReadUInt32LittleEndian(payload[(int)offset..]);
            long expected = (n + KvtcChunkFormat.SegmentSymbols - 1) / KvtcChunkFormat.SegmentSymbols;
            if (declared != expected || SegmentCount + expected > KvtcChunkFormat.MaxSegments)
            {
                throw new InvalidKvDataException($"kvtc: payload offset {offset}: bit width {b} declares {declared} segments; its {n} symbols take {expected} of {KvtcChunkFormat.SegmentSymbols} (at most {KvtcChunkFormat.MaxSegments} in a chunk).");
            }

            offset += 4;
            int count = (int)expected;
            if (payload.Length - offset < (long)count * KvtcChunkFormat.SegmentEntryBytes)
            {
                throw new InvalidKvDataException($"kvtc: the segment table of bit width {b} at payload offset {offset} is truncated ({count} entries of {KvtcChunkFormat.SegmentEntryBytes} bytes).");
            }

            EnsureSegments(SegmentCount + count);
            long entries = offset;
            long stream = offset + ((long)count * KvtcChunkFormat.SegmentEntryBytes);
            Cursor cursor = new(counts, blocks, b, coded);
            for (int i = 0; i < count; i++)
            {
                long at = entries + ((long)i * KvtcChunkFormat.SegmentEntryBytes);
                uint streamBytes = BinaryPrimitives.ReadUInt32LittleEndian(payload[(int)at..]);
                uint segmentEscapes = BinaryPrimitives.ReadUInt32LittleEndian(payload[(int)(at + 4)..]);
                int symbols = (int)Math.Min(KvtcChunkFormat.SegmentSymbols, n - ((long)i * KvtcChunkFormat.SegmentSymbols));
                if (streamBytes < 8 || streamBytes > payload.Length - stream)
                {
                    throw new InvalidKvDataException($"kvtc: payload offset {at}: segment {i} of bit width {b} declares {streamBytes} stream bytes; 8..{Math.Max(8, payload.Length - stream)} fit at payload offset {stream}.");
                }

                if (segmentEscapes > symbols)
                {
                    throw new InvalidKvDataException($"kvtc: payload offset {at + 4}: segment {i} of bit width {b} declares {segmentEscapes} escapes among its {symbols} symbols.");
                }

                Span<int> segment = _segments.AsSpan(SegmentCount * SegmentFields, SegmentFields);
                segment[StreamOffsetField] = (int)stream;
                segment[StreamBytesField] = (int)streamBytes;
                segment[SymbolsField] = symbols;
                segment[FirstEscapeField] = (int)escapes;
                segment[EscapesField] = (int)segmentEscapes;
                segment[BitsField] = b;
                segment[BlockField] = cursor.Block;
                segment[TokenField] = cursor.Token;
                segment[ComponentField] = cursor.Component;
                cursor.Advance(symbols);
                SegmentCount++;
                stream += streamBytes;
                escapes += segmentEscapes;
            }

            offset = stream;
        }

        if (payload.Length - offset < 4)
        {
            throw new InvalidKvDataException($"kvtc: escape count at payload offset {offset} is truncated.");
        }

        uint escapeCount = BinaryPrimitives.ReadUInt32LittleEndian(payload[(int)offset..]);
        if (escapeCount != escapes || (long)escapeCount * 2 != payload.Length - offset - 4)
        {
            throw new InvalidKvDataException($"kvtc: escape count at payload offset {offset} is {escapeCount}; the segments declare {escapes} escapes and {payload.Length - offset - 4} bytes follow (two per escape).");
        }

        EscapeOffset = (int)offset + 4;
        EscapeCount = (int)escapeCount;
    }

    private void EnsureSegments(int count)
    {
        if (_segments.Length < count * SegmentFields)
        {
            Array.Resize(ref _segments, Math.Max(count, _segments.Length / SegmentFields * 2) * SegmentFields);
        }
    }

    /// <summary>Walks one bit width's symbols: block, coded token, index among the block's components of the width.</summary>
    private ref struct Cursor
    {
        private readonly ReadOnlySpan<int> _counts;
        private readonly int _blocks;
        private readonly int _bits;
        private readonly int _coded;

        public Cursor(ReadOnlySpan<int> counts, int blocks, int bits, int coded)
        {
            _counts = counts;
            _blocks = blocks;
            _bits = bits;
            _coded = coded;
            Block = 0;
            Token = 0;
            Component = 0;
            SkipEmpty();
        }

        public int Block { get; private set; }

        public int Token { get; private set; }

        public int Component { get; private set; }

        public void Advance(long symbols)
        {
            while (symbols > 0 && Block < _blocks)
            {
                long m = _counts[(_bits * _blocks) + Block];
                long left = ((_coded - Token) * m) - Component;
                if (symbols < left)
                {
                    long at = (Token * m) + Component + symbols;
                    Token = (int)(at / m);
                    Component = (int)(at % m);
                    return;
                }

                symbols -= left;
                Block++;
                Token = 0;
                Component = 0;
                SkipEmpty();
            }
        }

        private void SkipEmpty()
        {
            while (Block < _blocks && _counts[(_bits * _blocks) + Block] == 0)
            {
                Block++;
            }
        }
    }
}
