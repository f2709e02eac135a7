namespace KvFetcher.Cuda.Nvdec;

/// <summary>
/// What one lossless 4:4:4 HEVC stream of the <c>video</c> codec holds: <see cref="Frames"/> frames of three
/// <see cref="Width"/> x <see cref="Height"/> planes (Y, U, V) at <see cref="Depth"/> bits. Decoded planes are laid out
/// like the CPU decoder's: frame f, plane p at <c>(f * 3 + p) * Width * Height</c> samples, one byte per sample at 8
/// bits and two (little-endian) at 10 and 12.
/// </summary>
public readonly record struct NvdecStreamFormat(int Width, int Height, int Depth, int Frames)
{
    /// <summary>The smallest frame side NVDEC decodes in HEVC 4:4:4.</summary>
    public const int MinSide = 144;

    /// <summary>The largest frame side of NVDEC's HEVC decoder.</summary>
    public const int MaxSide = 8192;

    /// <summary>Bytes per decoded sample: 1 at 8 bits, 2 at 10 and 12.</summary>
    public int SampleBytes => Depth > 8 ? 2 : 1;

    /// <summary>Samples in one plane.</summary>
    public long PlaneSamples => (long)Width * Height;

    /// <summary>Luma pixels in the whole stream (frames x width x height).</summary>
    public long Pixels => PlaneSamples * Frames;

    /// <summary>Bytes of the decoded planes of the whole stream.</summary>
    public long OutputBytes => PlaneSamples * 3 * Frames * SampleBytes;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> unless the format is one the codec writes and NVDEC decodes.</summary>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(Width, MinSide, nameof(Width));
        ArgumentOutOfRangeException.ThrowIfLessThan(Height, MinSide, nameof(Height));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(Width, MaxSide, nameof(Width));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(Height, MaxSide, nameof(Height));
        ArgumentOutOfRangeException.ThrowIfLessThan(Frames, 1, nameof(Frames));
        if (Depth is not (8 or 10 or 12))
        {
            throw new ArgumentOutOfRangeException(nameof(Depth), Depth, "HEVC streams here are 8, 10 or 12 bits.");
        }
    }
}
