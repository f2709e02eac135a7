using Microsoft.Win32.SafeHandles;

namespace KvFetcher.Codecs.Video.Native;

/// <summary>Owns a libkvfvideo decoder (a libavcodec HEVC decoder and its parser).</summary>
internal sealed class KvfDecoderHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public KvfDecoderHandle()
        : base(ownsHandle: true)
    {
    }

    protected override bool ReleaseHandle()
    {
        Interop.KvfVideo.DecoderDestroy(handle);
        return true;
    }
}
