namespace KvFetcher.Cuda.Nvdec;

/// <summary>Tuning of an <see cref="NvdecDecoder"/>.</summary>
public sealed record NvdecDecoderOptions
{
    /// <summary>
    /// How many pictures the parser queues before handing the first to display (cuvid's ulMaxDisplayDelay): NVDEC
    /// decodes these ahead while earlier ones are copied out. 0 decodes strictly one picture at a time.
    /// </summary>
    public int DisplayDelay { get; init; } = 4;

    /// <summary>Decode surfaces beyond the stream's minimum (and the display delay).</summary>
    public int ExtraSurfaces { get; init; } = 2;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> for values cuvid refuses.</summary>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfNegative(DisplayDelay, nameof(DisplayDelay));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(DisplayDelay, 16, nameof(DisplayDelay));
        ArgumentOutOfRangeException.ThrowIfNegative(ExtraSurfaces, nameof(ExtraSurfaces));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(ExtraSurfaces, 16, nameof(ExtraSurfaces));
    }
}
