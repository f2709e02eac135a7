using System.Runtime.InteropServices;

namespace KvFetcher.Codecs.Video.Native;

/// <summary>Entry points of libkvfvideo (native/kvfvideo/kvfvideo.c), the shim over libx265 and libavcodec.</summary>
internal static unsafe partial class Interop
{
    internal static partial class KvfVideo
    {
        /// <summary>The shim's ABI version this assembly was written against.</summary>
        public const int Version = 2;

        public const int Ok = 0;

        [LibraryImport(KvfVideoLibrary.Name, EntryPoint = "kvf_version")]
        public static partial int GetVersion();

        [LibraryImport(KvfVideoLibrary.Name, EntryPoint = "kvf_encoder_create")]
        public static partial int EncoderCreate(int width, int height, int depth, int frames, byte* preset, int threads, out KvfEncoderHandle encoder);

        [LibraryImport(KvfVideoLibrary.Name, EntryPoint = "kvf_encoder_encode")]
        public static partial int EncoderEncode(KvfEncoderHandle encoder, byte* y, byte* u, byte* v, int stride);

        [LibraryImport(KvfVideoLibrary.Name, EntryPoint = "kvf_encoder_finish")]
        public static partial int EncoderFinish(KvfEncoderHandle encoder, out byte* data, out nuint size);

        [LibraryImport(KvfVideoLibrary.Name, EntryPoint = "kvf_encoder_error")]
        public static partial byte* EncoderError(KvfEncoderHandle encoder);

        [LibraryImport(KvfVideoLibrary.Name, EntryPoint = "kvf_encoder_destroy")]
        public static partial void EncoderDestroy(IntPtr encoder);

        [LibraryImport(KvfVideoLibrary.Name, EntryPoint = "kvf_decoder_create")]
        public static partial int DecoderCreate(int width, int height, int depth, out KvfDecoderHandle decoder);

        [LibraryImport(KvfVideoLibrary.Name, EntryPoint = "kvf_decoder_decode")]
        public static partial int DecoderDecode(KvfDecoderHandle decoder, byte* data, nuint size, byte* planes, nuint planesSize, int maxFrames, out int frames);

        [LibraryImport(KvfVideoLibrary.Name, EntryPoint = "kvf_decoder_error")]
        public static partial byte* DecoderError(KvfDecoderHandle decoder);

        [LibraryImport(KvfVideoLibrary.Name, EntryPoint = "kvf_decoder_destroy")]
        public static partial void DecoderDestroy(IntPtr decoder);

        /// <summary>A readable name for a shim status code.</summary>
        public static string StatusName(int status) => status switch
        {
            0 => "ok",
            -1 => "invalid argument",
            -2 => "out of memory",
            -3 => "libx265 failure",
            -4 => "libavcodec failure",
            -5 => "unexpected frame",
            -6 => "too many frames",
            _ => $"status {status}",
        };
    }
}
