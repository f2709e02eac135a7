using System.Runtime.InteropServices;

namespace KvFetcher.Cuda.Native;

/// <summary>cuBLAS (<c>libcublas.so.*</c>, CUDA toolkit): the v2 API's handle, stream and mixed-precision GEMM.</summary>
internal static unsafe partial class Interop
{
    internal static partial class Cublas
    {
        public const string Library = NativeLibraries.Cublas;

        /// <summary><c>CUBLAS_OP_N</c>.</summary>
        public const int OperationNone = 0;

        /// <summary><c>CUBLAS_OP_T</c>.</summary>
        public const int OperationTranspose = 1;

        /// <summary><c>CUBLAS_GEMM_DEFAULT</c>.</summary>
        public const int GemmDefault = -1;

        /// <summary><c>CUDA_R_32F</c>.</summary>
        public const int DataFloat32 = 0;

        /// <summary><c>CUDA_R_16F</c>.</summary>
        public const int DataFloat16 = 2;

        /// <summary><c>CUDA_R_16BF</c>.</summary>
        public const int DataBFloat16 = 14;

        /// <summary><c>CUBLAS_COMPUTE_32F</c>: fp32 accumulation (tensor cores for 16-bit inputs).</summary>
        public const int Compute32F = 68;

        /// <summary><c>CUBLAS_COMPUTE_32F_PEDANTIC</c>: fp32 throughout, no reduced-precision shortcuts.</summary>
        public const int Compute32FPedantic = 69;

        /// <summary><c>CUBLAS_COMPUTE_32F_FAST_TF32</c>: fp32 inputs rounded to tf32 on the tensor cores.</summary>
        public const int Compute32FFastTf32 = 77;

        [LibraryImport(Library, EntryPoint = "cublasCreate_v2")]
        public static partial CublasStatus cublasCreate(IntPtr* handle);

        [LibraryImport(Library, EntryPoint = "cublasDestroy_v2")]
        public static partial CublasStatus cublasDestroy(IntPtr handle);

        [LibraryImport(Library, EntryPoint = "cublasSetStream_v2")]
        public static partial CublasStatus cublasSetStream(IntPtr handle, IntPtr stream);

        [LibraryImport(Library)]
        public static partial byte* cublasGetStatusString(CublasStatus status);

        [LibraryImport(Library, EntryPoint = "cublasGetVersion_v2")]
        public static partial CublasStatus cublasGetVersion(IntPtr handle, int* version);

        [LibraryImport(Library)]
        public static partial CublasStatus cublasGemmEx(
            IntPtr handle,
            int transposeA,
            int transposeB,
            int m,
            int n,
            int k,
            void* alpha,
            ulong a,
            int aType,
            int lda,
            ulong b,
            int bType,
            int ldb,
            void* beta,
            ulong c,
            int cType,
            int ldc,
            int computeType,
            int algorithm);

        [LibraryImport(Library)]
        public static partial CublasStatus cublasGemmStridedBatchedEx(
            IntPtr handle,
            int transposeA,
            int transposeB,
            int m,
            int n,
            int k,
            void* alpha,
            ulong a,
            int aType,
            int lda,
            long strideA,
            ulong b,
            int bType,
            int ldb,
            long strideB,
            void* beta,
            ulong c,
            int cType,
            int ldc,
            long strideC,
            int batchCount,
            int computeType,
            int algorithm);
    }
}
