using System.Runtime.InteropServices;

namespace KvFetcher.Cuda.Nvdec.Native;

/// <summary>Entry points of libnvcuvid.so.1 (the NVDECODE API, part of the NVIDIA driver).</summary>
internal static unsafe partial class Interop
{
    internal static partial class Nvcuvid
    {
        public const string Library = "libnvcuvid.so.1";

        [LibraryImport(Library, EntryPoint = "cuvidGetDecoderCaps")]
        public static partial int GetDecoderCaps(CuvidDecodeCaps* caps);

        [LibraryImport(Library, EntryPoint = "cuvidCtxLockCreate")]
        public static partial int CtxLockCreate(out CuvidContextLockHandle videoLock, IntPtr context);

        [LibraryImport(Library, EntryPoint = "cuvidCtxLockDestroy")]
        public static partial int CtxLockDestroy(IntPtr videoLock);

        [LibraryImport(Library, EntryPoint = "cuvidCreateVideoParser")]
        public static partial int CreateVideoParser(out CuvidParserHandle parser, CuvidParserParams* parameters);

        [LibraryImport(Library, EntryPoint = "cuvidParseVideoData")]
        public static partial int ParseVideoData(CuvidParserHandle parser, CuvidSourceDataPacket* packet);

        [LibraryImport(Library, EntryPoint = "cuvidDestroyVideoParser")]
        public static partial int DestroyVideoParser(IntPtr parser);

        [LibraryImport(Library, EntryPoint = "cuvidCreateDecoder")]
        public static partial int CreateDecoder(IntPtr* decoder, CuvidDecodeCreateInfo* info);

        [LibraryImport(Library, EntryPoint = "cuvidDestroyDecoder")]
        public static partial int DestroyDecoder(IntPtr decoder);

        [LibraryImport(Library, EntryPoint = "cuvidDecodePicture")]
        public static partial int DecodePicture(IntPtr decoder, IntPtr pictureParams);

        [LibraryImport(Library, EntryPoint = "cuvidGetDecodeStatus")]
        public static partial int GetDecodeStatus(IntPtr decoder, int pictureIndex, CuvidGetDecodeStatus* status);

        [LibraryImport(Library, EntryPoint = "cuvidMapVideoFrame64")]
        public static partial int MapVideoFrame64(IntPtr decoder, int pictureIndex, ulong* devicePointer, uint* pitch, CuvidProcParams* parameters);

        [LibraryImport(Library, EntryPoint = "cuvidUnmapVideoFrame64")]
        public static partial int UnmapVideoFrame64(IntPtr decoder, ulong devicePointer);
    }
}
