namespace KvFetcher.Codecs.CacheGen;

/// <summary>
/// A 32-bit range encoder (carry-propagating, in the style of LZMA's) over symbols whose cumulative frequencies sum
/// to <c>2^16</c>. Every normalization emits one byte and a symbol causes at most three, so a stream of n symbols
/// takes at most <c>3n + 5</c> bytes (<see cref="MaxEncodedLength"/>). The first byte of a stream is always 0.
/// </summary>
internal ref struct RangeEncoder
{
    /// <summary>Bits of the cumulative-frequency total: every table sums to <c>1 &lt;&lt; CdfBits</c>.</summary>
    public const int CdfBits = 16;

    private const uint TopValue = 1u << 24;

    private readonly Span<byte> _output;
    private int _position;
    private ulong _low;
    private uint _range;
    private byte _cache;
    private int _cacheSize;

    public RangeEncoder(Span<byte> output)
    {
        _output = output;
        _range = uint.MaxValue;
        _cacheSize = 1;
    }

    /// <summary>The most bytes a stream of <paramref name="symbols"/> symbols can take.</summary>
    public static long MaxEncodedLength(long symbols) => (3 * symbols) + 5;

    /// <summary>Encodes the symbol that owns <c>[start, start + frequency)</c> of <c>[0, 2^16)</c>; frequency &gt;= 1.</summary>
    public void Encode(uint start, uint frequency)
    {
        uint r = _range >> CdfBits;
        _low += (ulong)r * start;
        _range = r * frequency;
        while (_range < TopValue)
        {
            _range <<= 8;
            ShiftLow();
        }
    }

    /// <summary>Flushes the state and returns the stream's length in bytes.</summary>
    public int Finish()
    {
        for (int i = 0; i < 5; i++)
        {
            ShiftLow();
        }

        return _position;
    }

    private void ShiftLow()
    {
        if ((uint)_low < 0xFF00_0000u || (_low >> 32) != 0)
        {
            byte carry = (byte)(_low >> 32);
            byte pending = _cache;
            do
            {
                _output[_position++] = (byte)(pending + carry);
                pending = 0xFF;
            }
            while (--_cacheSize != 0);

            _cache = (byte)((uint)_low >> 24);
        }

        _cacheSize++;
        _low = (_low & 0x00FF_FFFF) << 8;
    }
}
