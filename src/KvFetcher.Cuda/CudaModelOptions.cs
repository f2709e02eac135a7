using KvFetcher.Core;

namespace KvFetcher.Cuda;

/// <summary>How the matrix products of a <see cref="CudaLanguageModel"/> compute. Every product accumulates in fp32.</summary>
public enum CudaMatmulPrecision
{
    /// <summary>
    /// Weights as the checkpoint stores them (bf16, fp16 or fp32) and activations rounded to that type for the
    /// products (cuBLAS tensor cores for 16-bit types); the LM head alone sees split activations (see
    /// <see cref="StoredSplit"/>), which costs nothing noticeable (one row per prompt). The fast setting, but the
    /// rounding of activations to bf16 costs accuracy: logits within 4e-2 to 6e-2 of fp32 on the test models, and
    /// greedy continuations may part from fp32's at near ties.
    /// </summary>
    Stored,

    /// <summary>
    /// Weights as stored; every activation enters the products as the sum of two values of the stored type
    /// (hi = round(x), lo = round(x - hi)), two products each on the 16-bit tensor cores: close to fp32 accuracy
    /// (bf16 weights are exact) at twice the product cost. Like <see cref="Stored"/> for fp32 checkpoints. The default.
    /// </summary>
    StoredSplit,

    /// <summary>Weights widened to fp32, products in full fp32 (no tensor cores): the reference setting.</summary>
    Float32,

    /// <summary>Weights widened to fp32, products on the tensor cores with inputs rounded to tf32.</summary>
    TensorFloat32,
}

/// <summary>
/// Which kernels compute attention. Decode-sized steps (at most 8 rows per KV head) take the split-K decode kernel
/// (fp32 arithmetic on CUDA cores, 16-byte loads of a 16-bit cache) unless <see cref="CudaCores"/> asks for the
/// reference kernel everywhere.
/// </summary>
public enum CudaAttentionKernel
{
    /// <summary>
    /// <see cref="TensorCores"/> where the model allows it and the products already round activations to 16 bits
    /// (<see cref="CudaMatmulPrecision.Stored"/>, the fast setting, where rounding Q and P adds nothing of another
    /// order); <see cref="CudaCores"/> otherwise, so the parity settings keep fp32 attention.
    /// </summary>
    Auto,

    /// <summary>The fp32 CUDA-core kernel for every step, decode included: every score and weight in fp32 (the reference).</summary>
    CudaCores,

    /// <summary>
    /// The flash kernel on the tensor cores (FlashAttention-2 style) wherever the model allows it: a 16-bit KV cache
    /// and a head dimension that is a multiple of 16, at most 128. Queries and softmax weights enter the products
    /// rounded to the cache's 16-bit type; scores, softmax and sums stay fp32.
    /// </summary>
    TensorCores,
}

/// <summary>Options of a model loaded on a CUDA device.</summary>
public sealed class CudaModelOptions
{
    /// <summary>The device to use when <see cref="Context"/> is not given.</summary>
    public int DeviceOrdinal { get; init; }

    /// <summary>A context to share (e.g. with NVDEC decoders); the model then does not own it.</summary>
    public CudaContext? Context { get; init; }

    /// <summary>The dtype KV values are stored in on the device (they are rounded to it when written).</summary>
    public DType KvStorageDType { get; init; } = DType.Float32;

    /// <summary>The most tokens one forward step computes; longer prefills run in steps of this size.</summary>
    public int MaxStepTokens { get; init; } = 2048;

    /// <summary>How the matrix products compute.</summary>
    public CudaMatmulPrecision MatmulPrecision { get; init; } = CudaMatmulPrecision.StoredSplit;

    /// <summary>Which kernel computes prefill attention.</summary>
    public CudaAttentionKernel Attention { get; init; } = CudaAttentionKernel.Auto;
}
