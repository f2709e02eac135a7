using System.Runtime.InteropServices;

namespace KvFetcher.Cuda.Native;

/// <summary>Entry points of libnvcuvid.so.1 (the NVDECODE API, part of the NVIDIA driver); they return CUresult codes.</summary>
internal static unsafe partial class Interop
{
    internal static partial class Nvcuvid
    {
        public const string Library = NativeLibraries.Nvcuvid;

        [LibraryImport(Library, EntryPoint = "cuvidGetDecoderCaps")]
        public static partial CudaResult GetDecoderCaps(CuvidDecodeCaps* caps);

        [LibraryImport(Library, EntryPoint = "cuvidCtxLockCreate")]
        public static partial CudaResult CtxLockCreate(out SafeCuvidContextLockHandle videoLock, IntPtr context);

        [LibraryImport(Library, EntryPoint = "cuvidCtxLockDestroy")]
        public static partial CudaResult CtxLockDestroy(IntPtr videoLock);

        [LibraryImport(Library, EntryPoint = "cuvidCreateVideoParser")]
        public static partial CudaResult CreateVideoParser(out SafeCuvidParserHandle parser, CuvidParserParams* parameters);

        [LibraryImport(Library, EntryPoint = "cuvidParseVideoData")]
        public static partial CudaResult ParseVideoData(SafeCuvidParserHandle parser, CuvidSourceDataPacket* packet);

        [LibraryImport(Library, EntryPoint = "cuvidDestroyVideoParser")]
        public static partial CudaResult DestroyVideoParser(IntPtr parser);

        [LibraryImport(Library, EntryPoint = "cuvidCreateDecoder")]
        public static partial CudaResult CreateDecoder(IntPtr* decoder, CuvidDecodeCreateInfo* info);

        [LibraryImport(Library, EntryPoint = "cuvidDestroyDecoder")]
        public static partial CudaResult DestroyDecoder(IntPtr decoder);

        [LibraryImport(Library, EntryPoint = "cuvidDecodePicture")]
        public static partial CudaResult DecodePicture(IntPtr decoder, IntPtr pictureParams);

        [LibraryImport(Library, EntryPoint = "cuvidGetDecodeStatus")]
        public static partial CudaResult GetDecodeStatus(IntPtr decoder, int pictureIndex, CuvidGetDecodeStatus* status);

        [LibraryImport(Library, EntryPoint = "cuvidMapVideoFrame64")]
        public static partial CudaResult MapVideoFrame64(IntPtr decoder, int pictureIndex, ulong* devicePointer, uint* pitch, CuvidProcParams* parameters);

        [LibraryImport(Library, EntryPoint = "cuvidUnmapVideoFrame64")]
        public static partial CudaResult UnmapVideoFrame64(IntPtr decoder, ulong devicePointer);
    }
}
