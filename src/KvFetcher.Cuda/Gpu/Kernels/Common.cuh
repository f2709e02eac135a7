// The types and helpers every kernel of the engine's NVRTC program uses (included first by Kernels.cu).
// The host defines, per model:
//   HEAD_DIM  the attention head dimension (even, at most 256)
//   KV        the KV cache's storage type (f32_t, f16_t or bf16_t)
//   ACT       the type of the matrix products' inputs (activations and weights), f32_t, f16_t or bf16_t
//   EMB       the stored type of the embedding table
//   TC_ATTENTION (optional) compiles flash_attention, the tensor-core prefill attention: KV 16-bit, HEAD_DIM a
//             multiple of 16 and at most 128
//   DECODE_ATTENTION (optional) compiles the split-K decode attention kernels: KV 16-bit, 32 % (HEAD_DIM / 8) == 0
//   GEMV      (optional) compiles the decode-step matrix-vector product: ACT 16-bit
// Residual stream, norms, RoPE, softmax and every accumulation run in fp32. Conversions to 16-bit types round to
// nearest even, like the CPU engine (KvFetcher.Core.Numerics.FloatConversions).

typedef unsigned short u16;
typedef decltype(sizeof(0)) size_t;

#define NEG_INF __uint_as_float(0xff800000u)

struct f32_t
{
    typedef float storage;
    static __device__ __forceinline__ float load(float v) { return v; }
    static __device__ __forceinline__ float store(float v) { return v; }
};

struct f16_t
{
    typedef u16 storage;
    static constexpr bool bf16 = false;
    static __device__ __forceinline__ float load(u16 h)
    {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
        return f;
    }
    static __device__ __forceinline__ u16 store(float f)
    {
        u16 h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
        return h;
    }
};

struct bf16_t
{
    typedef u16 storage;
    static constexpr bool bf16 = true;
    static __device__ __forceinline__ float load(u16 h) { return __uint_as_float(((unsigned int)h) << 16); }
    static __device__ __forceinline__ u16 store(float f)
    {
        unsigned int u = __float_as_uint(f);
        if ((u & 0x7fffffffu) > 0x7f800000u)
        {
            return (u16)((u >> 16) | 0x40u);
        }
        u += 0x7fffu + ((u >> 16) & 1u);
        return (u16)(u >> 16);
    }
};

typedef KV::storage kv_t;
typedef ACT::storage act_t;
typedef EMB::storage emb_t;

#define HD HEAD_DIM
#define FULL_MASK 0xffffffffu

// Element types of the KV export/import wire format, as KvFetcher.Core.DType numbers them.
__device__ __forceinline__ float load_dtype(const unsigned char* base, size_t index, int dtype)
{
    switch (dtype)
    {
        case 0: return ((const float*)base)[index];
        case 1: return f16_t::load(((const u16*)base)[index]);
        default: return bf16_t::load(((const u16*)base)[index]);
    }
}

__device__ __forceinline__ void store_dtype(unsigned char* base, size_t index, int dtype, float v)
{
    switch (dtype)
    {
        case 0: ((float*)base)[index] = v; break;
        case 1: ((u16*)base)[index] = f16_t::store(v); break;
        default: ((u16*)base)[index] = bf16_t::store(v); break;
    }
}

// Writes v rounded to the products' input type, and (when lo is given) the rounding error, also in that type: the
// products then see hi + lo, about 16 mantissa bits for bf16 (split activations, see CudaMatmulPrecision).
__device__ __forceinline__ void store_act(act_t* __restrict__ hi, act_t* __restrict__ lo, size_t i, float v)
{
    act_t h = ACT::store(v);
    hi[i] = h;
    if (lo != nullptr)
    {
        lo[i] = ACT::store(v - ACT::load(h));
    }
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1)
    {
        v += __shfl_xor_sync(FULL_MASK, v, offset);
    }
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1)
    {
        v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
    }
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
__device__ float block_sum(float v)
{
    __shared__ float partial[32];
    __shared__ float total;
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0)
    {
        partial[warp] = v;
    }
    __syncthreads();
    if (warp == 0)
    {
        float s = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.0f;
        s = warp_sum(s);
        if (lane == 0)
        {
            total = s;
        }
    }
    __syncthreads();
    return total;
}

// Unpacks eight 16-bit values (one 16-byte load) of type T to fp32.
template <typename T>
__device__ __forceinline__ void unpack8(uint4 raw, float* f)
{
    const u16* h = (const u16*)&raw;
#pragma unroll
    for (int e = 0; e < 8; e++)
    {
        f[e] = T::load(h[e]);
    }
}
