using Microsoft.Win32.SafeHandles;

namespace KvFetcher.Codecs.Video.Native;

/// <summary>Owns a libkvfvideo encoder (an x265 encoder and the stream it has written so far).</summary>
internal sealed class KvfEncoderHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public KvfEncoderHandle()
        : base(ownsHandle: true)
    {
    }

    protected override bool ReleaseHandle()
    {
        Interop.KvfVideo.EncoderDestroy(handle);
        return true;
    }
}
