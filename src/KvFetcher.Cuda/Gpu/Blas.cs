using KvFetcher.Core;
using KvFetcher.Cuda.Native;

namespace KvFetcher.Cuda.Gpu;

/// <summary>A cuBLAS handle bound to one stream: the engine's matrix products, fp32 accumulation and fp32 output.</summary>
internal sealed unsafe class Blas : IDisposable
{
    private readonly SafeCublasHandle _handle;
    private readonly int _inputType;
    private readonly int _computeType;

    public Blas(CudaContext context, CudaStream stream, DType inputType, CudaMatmulPrecision precision)
    {
        context.MakeCurrent();
        _handle = SafeCublasHandle.Create(context.Handle);
        try
        {
            Check.Cublas(Interop.Cublas.cublasSetStream(_handle.DangerousGetHandle(), stream.Handle));
        }
        catch
        {
            _handle.Dispose();
            throw;
        }

        _inputType = inputType switch
        {
            DType.Float32 => Interop.Cublas.DataFloat32,
            DType.Float16 => Interop.Cublas.DataFloat16,
            _ => Interop.Cublas.DataBFloat16,
        };
        _computeType = precision switch
        {
            CudaMatmulPrecision.Float32 => Interop.Cublas.Compute32FPedantic,
            CudaMatmulPrecision.TensorFloat32 => Interop.Cublas.Compute32FFastTf32,
            _ => Interop.Cublas.Compute32F,
        };
    }

    /// <summary>
    /// y[rows, outFeatures] (fp32, row-major) = x[rows, inFeatures] · w[outFeatures, inFeatures]ᵀ, x and w of the
    /// input type. Column-major, as cuBLAS sees the same memory: C[out, rows] = op_T(W as [in, out])[out, in] · X[in, rows].
    /// </summary>
    /// <remarks>With <paramref name="xLo"/> (the rounding error of x, see <see cref="CudaMatmulPrecision.StoredSplit"/>),
    /// a second product adds w · xLo.</remarks>
    public void Linear(ulong x, ulong xLo, ulong w, ulong y, int rows, int inFeatures, int outFeatures)
    {
        Gemm(x, w, y, rows, inFeatures, outFeatures, 0f);
        if (xLo != 0)
        {
            Gemm(xLo, w, y, rows, inFeatures, outFeatures, 1f);
        }
    }

    /// <summary>
    /// <paramref name="batch"/> products, column-major as cuBLAS sees memory: C[i] (fp32, m x n, ld m) = A[i] (input
    /// type, m x k, ld m) · B[i] (input type, k x n, ld k), each operand's i-th matrix <c>stride</c> elements after the
    /// previous one.
    /// </summary>
    public void StridedBatched(ulong a, long strideA, ulong b, long strideB, ulong c, long strideC, int m, int n, int k, int batch)
    {
        float alpha = 1f;
        float beta = 0f;
        Check.Cublas(Interop.Cublas.cublasGemmStridedBatchedEx(
            _handle.DangerousGetHandle(),
            Interop.Cublas.OperationNone,
            Interop.Cublas.OperationNone,
            m,
            n,
            k,
            &alpha,
            a,
            _inputType,
            m,
            strideA,
            b,
            _inputType,
            k,
            strideB,
            &beta,
            c,
            Interop.Cublas.DataFloat32,
            m,
            strideC,
            batch,
            _computeType,
            Interop.Cublas.GemmDefault));
    }

    public void Dispose() => _handle.Dispose();

    private void Gemm(ulong x, ulong w, ulong y, int rows, int inFeatures, int outFeatures, float beta)
    {
        float alpha = 1f;
        Check.Cublas(Interop.Cublas.cublasGemmEx(
            _handle.DangerousGetHandle(),
            Interop.Cublas.OperationTranspose,
            Interop.Cublas.OperationNone,
            outFeatures,
            rows,
            inFeatures,
            &alpha,
            w,
            _inputType,
            inFeatures,
            x,
            _inputType,
            inFeatures,
            &beta,
            y,
            Interop.Cublas.DataFloat32,
            outFeatures,
            _computeType,
            Interop.Cublas.GemmDefault));
    }
}
