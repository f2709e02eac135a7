using System.Runtime.InteropServices;

namespace KvFetcher.Cuda.Native;

/// <summary>NVRTC (<c>libnvrtc.so.*</c>, CUDA toolkit): compiles CUDA C++ to a cubin for the device at run time.</summary>
internal static unsafe partial class Interop
{
    internal static partial class Nvrtc
    {
        public const string Library = NativeLibraries.Nvrtc;

        [LibraryImport(Library)]
        public static partial NvrtcResult nvrtcVersion(int* major, int* minor);

        [LibraryImport(Library)]
        public static partial byte* nvrtcGetErrorString(NvrtcResult result);

        [LibraryImport(Library)]
        public static partial NvrtcResult nvrtcCreateProgram(IntPtr* program, byte* source, byte* name, int headers, byte** headerSources, byte** headerNames);

        [LibraryImport(Library)]
        public static partial NvrtcResult nvrtcDestroyProgram(IntPtr* program);

        [LibraryImport(Library)]
        public static partial NvrtcResult nvrtcCompileProgram(IntPtr program, int optionCount, byte** options);

        [LibraryImport(Library)]
        public static partial NvrtcResult nvrtcGetProgramLogSize(IntPtr program, nuint* size);

        [LibraryImport(Library)]
        public static partial NvrtcResult nvrtcGetProgramLog(IntPtr program, byte* log);

        [LibraryImport(Library)]
        public static partial NvrtcResult nvrtcGetCUBINSize(IntPtr program, nuint* size);

        [LibraryImport(Library)]
        public static partial NvrtcResult nvrtcGetCUBIN(IntPtr program, byte* cubin);

        [LibraryImport(Library)]
        public static partial NvrtcResult nvrtcGetPTXSize(IntPtr program, nuint* size);

        [LibraryImport(Library)]
        public static partial NvrtcResult nvrtcGetPTX(IntPtr program, byte* ptx);
    }
}
