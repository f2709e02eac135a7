using System.Runtime.InteropServices;

namespace KvFetcher.Bench.Native;

/// <summary>Native entry points the benchmarks compare against, one nested class per library.</summary>
internal static partial class Interop
{
    /// <summary>
    /// OpenBLAS (Debian's <c>libopenblas0</c>): the CBLAS products and the threading/config queries. Only
    /// blittable arguments, so no runtime marshalling is involved.
    /// </summary>
    internal static unsafe partial class OpenBlas
    {
        internal const string Library = "libopenblas.so.0";

        internal const int RowMajor = 101;
        internal const int NoTrans = 111;
        internal const int Trans = 112;

        [LibraryImport(Library, EntryPoint = "cblas_sgemm")]
        internal static partial void Sgemm(
            int order, int transA, int transB, int m, int n, int k, float alpha, float* a, int lda, float* b, int ldb, float beta, float* c, int ldc);

        [LibraryImport(Library, EntryPoint = "cblas_sgemv")]
        internal static partial void Sgemv(
            int order, int trans, int m, int n, float alpha, float* a, int lda, float* x, int incX, float beta, float* y, int incY);

        [LibraryImport(Library, EntryPoint = "openblas_set_num_threads")]
        internal static partial void SetNumThreads(int threads);

        [LibraryImport(Library, EntryPoint = "openblas_get_num_threads")]
        internal static partial int GetNumThreads();

        [LibraryImport(Library, EntryPoint = "openblas_get_corename")]
        private static partial nint GetCoreNamePointer();

        [LibraryImport(Library, EntryPoint = "openblas_get_config")]
        private static partial nint GetConfigPointer();

        /// <summary>The kernel family OpenBLAS picked for this CPU (e.g. Haswell, SkylakeX, Zen).</summary>
        internal static string CoreName => Marshal.PtrToStringUTF8(GetCoreNamePointer()) ?? "?";

        /// <summary>The build configuration string (version, threading, DYNAMIC_ARCH, ...).</summary>
        internal static string Config => Marshal.PtrToStringUTF8(GetConfigPointer())?.Trim() ?? "?";

        /// <summary>Loads the library once, turning a missing one into a message that says what to install.</summary>
        internal static void EnsureLoaded()
        {
            try
            {
                _ = GetNumThreads();
            }
            catch (DllNotFoundException ex)
            {
                throw new InvalidOperationException(
                    $"{Library} could not be loaded ({ex.Message}). Install Debian's libopenblas0 " +
                    "(apt-get install libopenblas0, or run tools/setup) and check that it is on the loader path.",
                    ex);
            }
        }
    }
}
