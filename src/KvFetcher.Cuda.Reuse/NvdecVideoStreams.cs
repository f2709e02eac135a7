using KvFetcher.Codecs.Video;
using KvFetcher.Core;
using KvFetcher.Cuda.Nvdec;

namespace KvFetcher.Cuda.Reuse;

/// <summary>How a <c>video</c> chunk's streams (read with <see cref="VideoChunkFormat"/>) are handed to NVDEC.</summary>
public static class NvdecVideoStreams
{
    /// <summary>
    /// The frames each of the chunk's streams decodes to, as NVDEC takes them; throws <see cref="InvalidKvDataException"/>
    /// if they are frames NVDEC cannot decode.
    /// </summary>
    public static NvdecStreamFormat FormatOf(VideoChunkHeader header)
    {
        var format = new NvdecStreamFormat(header.Width, header.Height, header.FrameDepth, header.FramesPerStream);
        try
        {
            format.Validate();
        }
        catch (ArgumentOutOfRangeException ex)
        {
            throw new InvalidKvDataException($"video: parameters declare frames NVDEC cannot decode ({format}): {ex.Message}", ex);
        }

        return format;
    }
}
