namespace KvFetcher.Codecs.CacheGen;

/// <summary>
/// The decoder twin of <see cref="RangeEncoder"/>. It never reads outside its input: past the end it reads zeros and
/// keeps counting, so that <see cref="Position"/> against the input length tells a caller whether the stream was
/// exactly consumed. The invariant <c>code &lt; range</c> holds for any input once <see cref="GetTarget"/> values
/// below <c>2^16</c> are the only ones acted on, so corrupt bytes give wrong symbols or a rejected target, never a
/// fault.
/// </summary>
internal ref struct RangeDecoder
{
    private const uint TopValue = 1u << 24;

    private readonly ReadOnlySpan<byte> _input;
    private long _position;
    private uint _range;
    private uint _code;
    private uint _step;

    /// <summary>Starts decoding; <paramref name="leadingByte"/> is the stream's first byte, which a valid stream has as 0.</summary>
    public RangeDecoder(ReadOnlySpan<byte> input, out byte leadingByte)
    {
        _input = input;
        _range = uint.MaxValue;
        leadingByte = NextByte();
        for (int i = 0; i < 4; i++)
        {
            _code = (_code << 8) | NextByte();
        }
    }

    /// <summary>Bytes read so far, counting reads past the end.</summary>
    public readonly long Position => _position;

    /// <summary>The cumulative-frequency value of the next symbol; a valid stream gives one below <c>2^16</c>.</summary>
    public uint GetTarget()
    {
        _step = _range >> RangeEncoder.CdfBits;
        return _code / _step;
    }

    /// <summary>Removes the symbol owning <c>[start, start + frequency)</c>, which must contain the last target.</summary>
    public void Consume(uint start, uint frequency)
    {
        _code -= _step * start;
        _range = _step * frequency;
        while (_range < TopValue)
        {
            _code = (_code << 8) | NextByte();
            _range <<= 8;
        }
    }

    private byte NextByte()
    {
        long position = _position++;
        return position < _input.Length ? _input[(int)position] : (byte)0;
    }
}
