using KvFetcher.Core;

namespace KvFetcher.Codecs.Video;

/// <summary>How a stream's quantized values are arranged in frames (the id is stored in the codec parameters).</summary>
public enum VideoLayoutKind : byte
{
    /// <summary>
    /// KVFetcher's layout: one token's <c>kvHeads * headDim</c> channels form a near-square tile (channels row-major,
    /// so each head is a band of rows); a frame is a grid of such tiles just large enough for NVDEC's 144x144
    /// minimum (the bundled model's 128 channels: 16x8 tiles in a 9x18 grid, 144x144, 162 tokens). Tokens run along
    /// time: token t sits in frame <c>t % framesPerGroup</c> of its layer group, tile <c>t / framesPerGroup</c>, so the
    /// same pixel in consecutive frames holds consecutive tokens of one channel.
    /// </summary>
    TokenTiles = 1,

    /// <summary>
    /// Token x channel images: row c holds channel c, column t holds token t (up to 8192 tokens per frame, at least
    /// 144 columns and rows), so horizontal neighbours are consecutive tokens of one channel; layers run along the
    /// planes and frames.
    /// </summary>
    ChannelRows = 2,
}

/// <summary>
/// The frame geometry of one chunk. K and V are separate HEVC streams. In each, a frame holds three consecutive
/// layers as its Y, U and V planes (a last group with fewer layers has zero planes); a layer group spans
/// <see cref="FramesPerGroup"/> frames; unused pixels are zero.
/// </summary>
internal readonly record struct VideoLayout(VideoLayoutKind Kind, int Width, int Height, int TileWidth, int TileHeight, int FramesPerGroup, int Groups)
{
    public int PlaneSamples => Width * Height;

    public int FramesPerStream => Groups * FramesPerGroup;

    /// <summary>The samples of one stream's frames (all planes).</summary>
    public int StreamSamples => FramesPerStream * 3 * PlaneSamples;

    private int GridColumns => Width / TileWidth;

    /// <summary>The layout for <paramref name="shape"/>; throws <see cref="ArgumentException"/> if its frames would exceed 8192x8192.</summary>
    public static VideoLayout For(KvShape shape, VideoLayoutKind kind)
    {
        shape.Validate();
        int channels = shape.Channels;
        int groups = (shape.Layers + 2) / 3;
        VideoLayout layout;
        if (kind == VideoLayoutKind.TokenTiles)
        {
            int tileHeight = 1;
            for (int h = (int)Math.Sqrt(channels); h >= 1; h--)
            {
                if (channels % h == 0)
                {
                    tileHeight = h;
                    break;
                }
            }

            int tileWidth = channels / tileHeight;
            long columns = Math.Max(1, (HevcStream.MinSide + tileWidth - 1) / tileWidth);
            long rows = Math.Max(1, (HevcStream.MinSide + tileHeight - 1) / tileHeight);
            CheckSide(columns * tileWidth, channels);
            CheckSide(rows * tileHeight, channels);
            long slots = columns * rows;
            layout = new VideoLayout(kind, (int)columns * tileWidth, (int)rows * tileHeight, tileWidth, tileHeight, (int)((shape.Tokens + slots - 1) / slots), groups);
        }
        else if (kind == VideoLayoutKind.ChannelRows)
        {
            CheckSide(channels, channels);
            int width = Math.Clamp(shape.Tokens, HevcStream.MinSide, HevcStream.MaxSide);
            layout = new VideoLayout(kind, width, Math.Max(HevcStream.MinSide, channels), 1, 1, (shape.Tokens + width - 1) / width, groups);
        }
        else
        {
            throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown video layout.");
        }

        if ((long)layout.FramesPerStream * 3 * layout.PlaneSamples * 2 > Array.MaxLength)
        {
            throw new ArgumentException($"video: {shape} needs {layout.FramesPerStream} frames of {layout.Width}x{layout.Height}, more than one buffer can hold.", nameof(shape));
        }

        return layout;
    }

    /// <summary>Where each token's values start, relative to its layer group's first frame's Y plane.</summary>
    public void TokenOffsets(Span<int> offsets)
    {
        for (int t = 0; t < offsets.Length; t++)
        {
            if (Kind == VideoLayoutKind.TokenTiles)
            {
                int slot = t / FramesPerGroup;
                int x = slot % GridColumns * TileWidth;
                int y = slot / GridColumns * TileHeight;
                offsets[t] = (t % FramesPerGroup * 3 * PlaneSamples) + (y * Width) + x;
            }
            else
            {
                offsets[t] = (t / Width * 3 * PlaneSamples) + (t % Width);
            }
        }
    }

    /// <summary>Where each channel sits relative to its token's offset.</summary>
    public void ChannelOffsets(Span<int> offsets)
    {
        for (int c = 0; c < offsets.Length; c++)
        {
            offsets[c] = Kind == VideoLayoutKind.TokenTiles ? (c / TileWidth * Width) + (c % TileWidth) : c * Width;
        }
    }

    /// <summary>Where layer <paramref name="layer"/>'s plane of its group's first frame starts.</summary>
    public int LayerOffset(int layer) => (layer / 3 * FramesPerGroup * 3 * PlaneSamples) + (layer % 3 * PlaneSamples);

    private static void CheckSide(long side, int channels)
    {
        if (side > HevcStream.MaxSide)
        {
            throw new ArgumentException($"video: {channels} channels per token need a frame side of {side}, more than {HevcStream.MaxSide}.", nameof(channels));
        }
    }
}
