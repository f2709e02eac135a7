// The engine's own CUDA kernels, compiled at run time by NVRTC for the device at hand (Gpu/KernelModule.cs).
// The host defines, per model:
//   HEAD_DIM  the attention head dimension (even, at most 256)
//   KV        the KV cache's storage type (f32_t, f16_t or bf16_t)
//   TC_ATTENTION (optional) compiles flash_attention, the tensor-core prefill attention: KV 16-bit, HEAD_DIM a
//             multiple of 16 and at most 128
//   ACT       the type of the matrix products' inputs (activations and weights), f32_t, f16_t or bf16_t
//   EMB       the stored type of the embedding table
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

// x[row, :] = embedding[tokens[row], :] in fp32. Grid: one block per token.
extern "C" __global__ void embed(const int* __restrict__ tokens, const emb_t* __restrict__ table, float* __restrict__ x, int d)
{
    int row = blockIdx.x;
    const emb_t* source = table + (size_t)tokens[row] * d;
    float* target = x + (size_t)row * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
    {
        target[i] = EMB::load(source[i]);
    }
}

// y[row, :] = weight * x[row, :] / sqrt(mean(x[row, :]^2) + eps), rounded to the matrix products' input type
// (+ the rounding error in yLo when given).
extern "C" __global__ void rmsnorm(const float* __restrict__ x, const float* __restrict__ weight, act_t* __restrict__ y, act_t* __restrict__ yLo, int d, float eps)
{
    const float* source = x + (size_t)blockIdx.x * d;
    size_t row = (size_t)blockIdx.x * d;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
    {
        sum = fmaf(source[i], source[i], sum);
    }
    sum = block_sum(sum);
    float scale = 1.0f / sqrtf(sum / (float)d + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x)
    {
        store_act(y, yLo, row + i, weight[i] * (source[i] * scale));
    }
}

// The fused q/k/v projection's output [n, (heads + 2 kvHeads) * HD] (+ bias) becomes: q with RoPE (fp32,
// [n, heads, HD]); k with RoPE and v written into one layer of the cache ([kvHead][capacity][HD]) at positions
// start + row, rounded to the storage type. RoPE uses Hugging Face's half-split rotation and the CPU's cos/sin table
// ([position][HD / 2]), products rounded before the sum as the CPU computes them. Grid: one block per token.
extern "C" __global__ void qkv_rope(
    const float* __restrict__ qkv, const float* __restrict__ bias, const float* __restrict__ cosTable, const float* __restrict__ sinTable,
    float* __restrict__ q, kv_t* __restrict__ keys, kv_t* __restrict__ values, int start, int heads, int kvHeads, int capacity)
{
    const int half = HD / 2;
    int row = blockIdx.x;
    int position = start + row;
    int width = (heads + 2 * kvHeads) * HD;
    const float* source = qkv + (size_t)row * width;
    const float* cosRow = cosTable + (size_t)position * half;
    const float* sinRow = sinTable + (size_t)position * half;
    for (int p = threadIdx.x; p < (heads + kvHeads) * half; p += blockDim.x)
    {
        int h = p / half;
        int i = p - h * half;
        int at = h * HD + i;
        float a = source[at];
        float b = source[at + half];
        if (bias != nullptr)
        {
            a += bias[at];
            b += bias[at + half];
        }
        float c = cosRow[i];
        float s = sinRow[i];
        float ra = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        float rb = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
        if (h < heads)
        {
            float* target = q + ((size_t)row * heads + h) * HD;
            target[i] = ra;
            target[i + half] = rb;
        }
        else
        {
            kv_t* target = keys + ((size_t)(h - heads) * capacity + position) * HD;
            target[i] = KV::store(ra);
            target[i + half] = KV::store(rb);
        }
    }

    int valueAt = (heads + kvHeads) * HD;
    for (int e = threadIdx.x; e < kvHeads * HD; e += blockDim.x)
    {
        int h = e / HD;
        int d = e - h * HD;
        float v = source[valueAt + e];
        if (bias != nullptr)
        {
            v += bias[valueAt + e];
        }
        values[((size_t)h * capacity + position) * HD + d] = KV::store(v);
    }
}

// Causal grouped-query attention of queries at positions start + [0, n) over one layer of the cache, flash style:
// key tiles in shared memory, an online softmax per query row in fp32. A block serves one KV head and ATT_ROWS rows
// of (query, head of the KV head's group), query-major, so the group's heads share each key tile it loads (a decode
// step's group heads run in one block). Four warps; row slot s goes to warp s % 4, so a few rows still spread over
// all warps; a warp's lanes take one key each for the scores, one dimension each for the weighted sum. Grid: (row
// tiles, KV heads, splits). With splits > 1 the block's key range is cut in `splits` parts (long contexts with few
// queries, e.g. decoding) and each part writes its unnormalized state (max, sum, HD values) to `partial` for
// attention_combine; with splits == 1 the block writes the output directly.
#define ATT_ROWS 16
#define ATT_KEYS 32
#define ATT_WARPS 4
#define ATT_PER_WARP (ATT_ROWS / ATT_WARPS)
#define ATT_DIMS_PER_LANE ((HD + 31) / 32)
#define KEY_STRIDE (HD + 1)

extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention(
    const float* __restrict__ q, const kv_t* __restrict__ keys, const kv_t* __restrict__ values, act_t* __restrict__ output,
    act_t* __restrict__ outputLo, float* __restrict__ partial, int n, int start, int heads, int group, int capacity, int window, float scale, int splits)
{
    extern __shared__ float shared[];
    float* queryTile = shared;                              // [ATT_ROWS][HD]
    float* keyTile = queryTile + ATT_ROWS * HD;             // [ATT_KEYS][HD + 1]
    float* valueTile = keyTile + ATT_KEYS * KEY_STRIDE;     // [ATT_KEYS][HD]

    int kvHead = blockIdx.y;
    int split = blockIdx.z;
    int warp = threadIdx.x >> 5;
    int lane = threadIdx.x & 31;
    int rows = n * group;
    int firstRow = blockIdx.x * ATT_ROWS;
    int firstQuery = firstRow / group;
    int lastQuery = (min(firstRow + ATT_ROWS, rows) - 1) / group;

    // Keys any query of the block sees: [max(0, first position - window + 1), last position].
    int keyLo = max(0, start + firstQuery - window + 1);
    int keyHi = start + lastQuery + 1;
    int tiles = (keyHi - keyLo + ATT_KEYS - 1) / ATT_KEYS;
    int tilesPerSplit = (tiles + splits - 1) / splits;
    int tileBegin = split * tilesPerSplit;
    int tileEnd = min(tiles, tileBegin + tilesPerSplit);

    for (int i = threadIdx.x; i < ATT_ROWS * HD; i += blockDim.x)
    {
        int slot = i / HD;
        int d = i - slot * HD;
        int row = firstRow + slot;
        float value = 0.0f;
        if (row < rows)
        {
            int query = row / group;
            int head = kvHead * group + (row - query * group);
            value = q[((size_t)query * heads + head) * HD + d];
        }
        queryTile[i] = value;
    }

    float m[ATT_PER_WARP];
    float l[ATT_PER_WARP];
    float acc[ATT_PER_WARP][ATT_DIMS_PER_LANE];
    for (int r = 0; r < ATT_PER_WARP; r++)
    {
        m[r] = NEG_INF;
        l[r] = 0.0f;
        for (int c = 0; c < ATT_DIMS_PER_LANE; c++)
        {
            acc[r][c] = 0.0f;
        }
    }

    const kv_t* keyBase = keys + (size_t)kvHead * capacity * HD;
    const kv_t* valueBase = values + (size_t)kvHead * capacity * HD;
    for (int t = tileBegin; t < tileEnd; t++)
    {
        int key0 = keyLo + t * ATT_KEYS;
        __syncthreads();
        for (int i = threadIdx.x; i < ATT_KEYS * HD; i += blockDim.x)
        {
            int j = i / HD;
            int d = i - j * HD;
            int key = key0 + j;
            float k = 0.0f;
            float v = 0.0f;
            if (key < keyHi)
            {
                k = KV::load(keyBase[(size_t)key * HD + d]);
                v = KV::load(valueBase[(size_t)key * HD + d]);
            }
            keyTile[j * KEY_STRIDE + d] = k;
            valueTile[j * HD + d] = v;
        }
        __syncthreads();

        for (int r = 0; r < ATT_PER_WARP; r++)
        {
            int slot = r * ATT_WARPS + warp;
            int row = firstRow + slot;
            if (row >= rows)
            {
                break;
            }

            int position = start + row / group;
            int lo = max(0, position - window + 1);
            int key = key0 + lane;
            bool valid = key >= lo && key <= position;
            if (!__any_sync(FULL_MASK, valid))
            {
                continue;
            }

            float score = NEG_INF;
            if (valid)
            {
                const float* queryRow = queryTile + slot * HD;
                const float* keyRow = keyTile + lane * KEY_STRIDE;
                float dot = 0.0f;
#pragma unroll 16
                for (int d = 0; d < HD; d++)
                {
                    dot = fmaf(queryRow[d], keyRow[d], dot);
                }
                score = dot * scale;
            }

            float newMax = fmaxf(m[r], warp_max(score));
            float p = valid ? expf(score - newMax) : 0.0f;
            float correction = expf(m[r] - newMax);
            l[r] = l[r] * correction + warp_sum(p);
            for (int c = 0; c < ATT_DIMS_PER_LANE; c++)
            {
                acc[r][c] *= correction;
            }
            for (int j = 0; j < ATT_KEYS; j++)
            {
                float pj = __shfl_sync(FULL_MASK, p, j);
#pragma unroll
                for (int c = 0; c < ATT_DIMS_PER_LANE; c++)
                {
                    int d = lane + 32 * c;
                    if (d < HD)
                    {
                        acc[r][c] = fmaf(pj, valueTile[j * HD + d], acc[r][c]);
                    }
                }
            }
            m[r] = newMax;
        }
    }

    for (int r = 0; r < ATT_PER_WARP; r++)
    {
        int row = firstRow + r * ATT_WARPS + warp;
        if (row >= rows)
        {
            break;
        }

        int query = row / group;
        int head = kvHead * group + (row - query * group);
        if (splits == 1)
        {
            float inverse = 1.0f / l[r];
            size_t at = ((size_t)query * heads + head) * HD;
            for (int c = 0; c < ATT_DIMS_PER_LANE; c++)
            {
                int d = lane + 32 * c;
                if (d < HD)
                {
                    store_act(output, outputLo, at + d, acc[r][c] * inverse);
                }
            }
        }
        else
        {
            float* target = partial + (((size_t)split * n + query) * heads + head) * (HD + 2);
            if (lane == 0)
            {
                target[0] = m[r];
                target[1] = l[r];
            }
            for (int c = 0; c < ATT_DIMS_PER_LANE; c++)
            {
                int d = lane + 32 * c;
                if (d < HD)
                {
                    target[2 + d] = acc[r][c];
                }
            }
        }
    }
}

// Merges the split states of attention: output = Σ acc_s e^(m_s - M) / Σ l_s e^(m_s - M). Grid: (n, heads), one warp.
extern "C" __global__ void attention_combine(const float* __restrict__ partial, act_t* __restrict__ output, act_t* __restrict__ outputLo, int n, int heads, int splits)
{
    int query = blockIdx.x;
    int head = blockIdx.y;
    int lane = threadIdx.x;
    size_t stride = (size_t)n * heads * (HD + 2);
    const float* first = partial + ((size_t)query * heads + head) * (HD + 2);
    float maximum = NEG_INF;
    for (int s = 0; s < splits; s++)
    {
        maximum = fmaxf(maximum, first[s * stride]);
    }

    float sum = 0.0f;
    float acc[ATT_DIMS_PER_LANE];
    for (int c = 0; c < ATT_DIMS_PER_LANE; c++)
    {
        acc[c] = 0.0f;
    }
    for (int s = 0; s < splits; s++)
    {
        const float* state = first + s * stride;
        if (state[0] == NEG_INF)
        {
            continue;
        }
        float weight = expf(state[0] - maximum);
        sum += state[1] * weight;
        for (int c = 0; c < ATT_DIMS_PER_LANE; c++)
        {
            int d = lane + 32 * c;
            if (d < HD)
            {
                acc[c] = fmaf(state[2 + d], weight, acc[c]);
            }
        }
    }

    float inverse = 1.0f / sum;
    size_t at = ((size_t)query * heads + head) * HD;
    for (int c = 0; c < ATT_DIMS_PER_LANE; c++)
    {
        int d = lane + 32 * c;
        if (d < HD)
        {
            store_act(output, outputLo, at + d, acc[c] * inverse);
        }
    }
}

#ifdef TC_ATTENTION
// Causal grouped-query attention on the tensor cores (FlashAttention-2 style), for prefill steps: the same function as
// attention (queries at positions start + [0, n) over one layer of the cache, per-layer window), with Q rounded to the
// cache's 16-bit type, S = Q K^T and O = P V as mma.sync m16n8k16 products accumulating in fp32, an online softmax
// in fp32 registers (P rounded to the 16-bit type for its product); scores never leave registers. A block serves one
// KV head and MT * 64 rows of (query, head of the group), query-major as in attention, so the group's heads share
// every key tile; four warps of MT * 16 rows each: with MT = 2 every K and V fragment a warp loads from shared memory
// feeds four products instead of two, which halves the shared-memory traffic per product (shared-memory bandwidth,
// not the tensor cores, bounds the one-tile warp). Q waits in shared memory, rounded once, and is loaded per key
// tile by ldmatrix (registers hold the 2 x 16 x 64 scores and 2 x 16 x HD outputs). Key/value tiles of FA_KEYS keys
// stream through shared memory by cp.async, two stages deep, rows padded by 16 bytes so the ldmatrix fragment loads
// are free of bank conflicts. Grid: (row tiles, KV heads); the tiles with the most keys start first. Two entry
// points: flash_attention (MT = 2, 128 rows) for long steps, flash_attention_narrow (MT = 1, 64 rows) for steps
// whose 128-row tiles would leave SMs idle.
#define FA_KEYS 64
#define FA_WARPS 4
#define FA_STRIDE (HD + 8)
#define FA_KSTEPS (HD / 16)
#define FA_DTILES (HD / 8)
#define FA_TILE_ELEMENTS (FA_KEYS * FA_STRIDE)
#define LOG2E 1.4426950408889634f

__device__ __forceinline__ unsigned int fa_pack(float lo, float hi)
{
    unsigned int r;
    if (KV::bf16)
    {
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    }
    else
    {
        asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    }
    return r;
}

__device__ __forceinline__ void fa_mma(float* c, unsigned int a0, unsigned int a1, unsigned int a2, unsigned int a3, unsigned int b0, unsigned int b1)
{
    if (KV::bf16)
    {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
    else
    {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
}

__device__ __forceinline__ void fa_ldmatrix_x4(unsigned int address, unsigned int& r0, unsigned int& r1, unsigned int& r2, unsigned int& r3)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(address));
}

__device__ __forceinline__ void fa_ldmatrix_x4_trans(unsigned int address, unsigned int& r0, unsigned int& r1, unsigned int& r2, unsigned int& r3)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(address));
}

// Copies [key0, key0 + FA_KEYS) of one KV head's keys and values into a shared stage, zeros for keys >= keyHi.
__device__ __forceinline__ void fa_load_tile(const kv_t* __restrict__ keyBase, const kv_t* __restrict__ valueBase, kv_t* keyTile, kv_t* valueTile, int key0, int keyHi)
{
    const int chunks = FA_KEYS * (HD / 8);
    for (int i = threadIdx.x; i < chunks; i += FA_WARPS * 32)
    {
        int j = i / (HD / 8);
        int c = (i - j * (HD / 8)) * 8;
        int key = key0 + j;
        bool inside = key < keyHi;
        size_t at = (size_t)(inside ? key : key0) * HD + c;
        unsigned int bytes = inside ? 16u : 0u;
        unsigned int keyTarget = (unsigned int)__cvta_generic_to_shared(keyTile + j * FA_STRIDE + c);
        unsigned int valueTarget = (unsigned int)__cvta_generic_to_shared(valueTile + j * FA_STRIDE + c);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(keyTarget), "l"(keyBase + at), "r"(bytes));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(valueTarget), "l"(valueBase + at), "r"(bytes));
    }
    asm volatile("cp.async.commit_group;");
}

template <int MT>
__device__ __forceinline__ void flash_body(
    const float* __restrict__ q, const kv_t* __restrict__ keys, const kv_t* __restrict__ values, act_t* __restrict__ output,
    act_t* __restrict__ outputLo, int n, int start, int heads, int group, int capacity, int window, float scale)
{
    constexpr int ROWS = FA_WARPS * 16 * MT;
    extern __shared__ __align__(16) unsigned char fa_shared[];
    kv_t* queryTile = (kv_t*)fa_shared;             // [ROWS][FA_STRIDE]
    kv_t* stage = queryTile + ROWS * FA_STRIDE;     // [2 stages][keys, values][FA_KEYS][FA_STRIDE]

    int kvHead = blockIdx.y;
    int warp = threadIdx.x >> 5;
    int lane = threadIdx.x & 31;
    int g = lane >> 2;
    int t = lane & 3;
    int rows = n * group;
    int firstRow = (gridDim.x - 1 - blockIdx.x) * ROWS;
    int firstQuery = firstRow / group;
    int lastQuery = (min(firstRow + ROWS, rows) - 1) / group;
    int keyLo = max(0, start + firstQuery - window + 1);
    int keyHi = start + lastQuery + 1;
    int tiles = (keyHi - keyLo + FA_KEYS - 1) / FA_KEYS;

    const kv_t* keyBase = keys + (size_t)kvHead * capacity * HD;
    const kv_t* valueBase = values + (size_t)kvHead * capacity * HD;
    if (tiles > 0)
    {
        fa_load_tile(keyBase, valueBase, stage, stage + FA_TILE_ELEMENTS, keyLo, keyHi);
    }

    // Q rounded to the 16-bit type into shared memory, zeros past the last row.
    for (int i = threadIdx.x; i < ROWS * (HD / 2); i += FA_WARPS * 32)
    {
        int slot = i / (HD / 2);
        int d = (i - slot * (HD / 2)) * 2;
        int row = firstRow + slot;
        float2 v = make_float2(0.0f, 0.0f);
        if (row < rows)
        {
            int query = row / group;
            v = *(const float2*)(q + ((size_t)query * heads + kvHead * group + (row - query * group)) * HD + d);
        }
        *(unsigned int*)(queryTile + slot * FA_STRIDE + d) = fa_pack(v.x, v.y);
    }

    // This thread's rows are g and g + 8 of each of the warp's MT tiles of 16.
    int warpFirstRow = firstRow + warp * 16 * MT;
    int warpLastRow = min(warpFirstRow + 16 * MT - 1, rows - 1);
    int warpFirstPosition = start + warpFirstRow / group;
    int warpLastPosition = start + max(warpLastRow, warpFirstRow) / group;

    float o[MT][FA_DTILES][4];
    float maxA[MT], maxB[MT], sumA[MT], sumB[MT];
#pragma unroll
    for (int m = 0; m < MT; m++)
    {
#pragma unroll
        for (int j = 0; j < FA_DTILES; j++)
        {
            o[m][j][0] = 0.0f;
            o[m][j][1] = 0.0f;
            o[m][j][2] = 0.0f;
            o[m][j][3] = 0.0f;
        }
        maxA[m] = NEG_INF;
        maxB[m] = NEG_INF;
        sumA[m] = 0.0f;
        sumB[m] = 0.0f;
    }
    float scaleLog2 = scale * LOG2E;
    // ldmatrix row addresses: Q's A fragments (rows 0-15, columns 0 / 8), K's B fragments (keys 0-7, four column
    // blocks), V's transposed B fragments (keys 0-15, two column blocks).
    unsigned int queryAddress = (unsigned int)__cvta_generic_to_shared(queryTile + (warp * 16 * MT + (lane & 15)) * FA_STRIDE + (lane >> 4) * 8);

    for (int tile = 0; tile < tiles; tile++)
    {
        int key0 = keyLo + tile * FA_KEYS;
        if (tile + 1 < tiles)
        {
            kv_t* next = stage + ((tile + 1) & 1) * 2 * FA_TILE_ELEMENTS;
            fa_load_tile(keyBase, valueBase, next, next + FA_TILE_ELEMENTS, key0 + FA_KEYS, keyHi);
        }
        else
        {
            asm volatile("cp.async.commit_group;");
        }
        asm volatile("cp.async.wait_group 1;");
        __syncthreads();

        const kv_t* keyTile = stage + (tile & 1) * 2 * FA_TILE_ELEMENTS;
        const kv_t* valueTile = keyTile + FA_TILE_ELEMENTS;

        // Skip a tile that no row of this warp sees (past the warp's last position, or before every row's window).
        bool seen = key0 <= warpLastPosition && key0 + FA_KEYS - 1 >= warpFirstPosition - window + 1 && warpFirstRow < rows;
        if (seen)
        {
            float s[MT][FA_KEYS / 8][4];
#pragma unroll
            for (int m = 0; m < MT; m++)
            {
#pragma unroll
                for (int j = 0; j < FA_KEYS / 8; j++)
                {
                    s[m][j][0] = 0.0f;
                    s[m][j][1] = 0.0f;
                    s[m][j][2] = 0.0f;
                    s[m][j][3] = 0.0f;
                }
            }

            unsigned int keyAddress = (unsigned int)__cvta_generic_to_shared(keyTile + ((lane & 7) + ((lane >> 4) << 3)) * FA_STRIDE + ((lane >> 3) & 1) * 8);
#pragma unroll
            for (int k = 0; k < FA_KSTEPS; k++)
            {
                // Q's A fragments of k step k (dims 16k..16k+15) for each of the warp's row tiles.
                unsigned int qf[MT][4];
#pragma unroll
                for (int m = 0; m < MT; m++)
                {
                    fa_ldmatrix_x4(queryAddress + (unsigned int)((m * 16 * FA_STRIDE + k * 16) * 2), qf[m][0], qf[m][1], qf[m][2], qf[m][3]);
                }
#pragma unroll
                for (int j = 0; j < FA_KEYS / 8; j += 2)
                {
                    // Keys 8j..8j+15, dims 16k..16k+15: B fragments of key tiles j and j + 1.
                    unsigned int b0, b1, b2, b3;
                    fa_ldmatrix_x4(keyAddress + (unsigned int)((j * 8 * FA_STRIDE + k * 16) * 2), b0, b1, b2, b3);
#pragma unroll
                    for (int m = 0; m < MT; m++)
                    {
                        fa_mma(s[m][j], qf[m][0], qf[m][1], qf[m][2], qf[m][3], b0, b1);
                        fa_mma(s[m][j + 1], qf[m][0], qf[m][1], qf[m][2], qf[m][3], b2, b3);
                    }
                }
            }

            // Mask (causal, window, past the block's keys) only where a tile is not wholly visible to every row.
            bool whole = key0 + FA_KEYS - 1 <= warpFirstPosition && key0 >= warpLastPosition - window + 1;
            float baseA[MT], baseB[MT];
#pragma unroll
            for (int m = 0; m < MT; m++)
            {
                int positionA = start + (warpFirstRow + m * 16 + g) / group;
                int positionB = start + (warpFirstRow + m * 16 + g + 8) / group;
                float tileMaxA = NEG_INF, tileMaxB = NEG_INF;
#pragma unroll
                for (int j = 0; j < FA_KEYS / 8; j++)
                {
#pragma unroll
                    for (int e = 0; e < 2; e++)
                    {
                        int key = key0 + j * 8 + 2 * t + e;
                        float va = s[m][j][e] * scaleLog2;
                        float vb = s[m][j][2 + e] * scaleLog2;
                        if (!whole)
                        {
                            va = key <= positionA && key > positionA - window ? va : NEG_INF;
                            vb = key <= positionB && key > positionB - window ? vb : NEG_INF;
                        }
                        s[m][j][e] = va;
                        s[m][j][2 + e] = vb;
                        tileMaxA = fmaxf(tileMaxA, va);
                        tileMaxB = fmaxf(tileMaxB, vb);
                    }
                }
                tileMaxA = fmaxf(tileMaxA, __shfl_xor_sync(FULL_MASK, tileMaxA, 1));
                tileMaxA = fmaxf(tileMaxA, __shfl_xor_sync(FULL_MASK, tileMaxA, 2));
                tileMaxB = fmaxf(tileMaxB, __shfl_xor_sync(FULL_MASK, tileMaxB, 1));
                tileMaxB = fmaxf(tileMaxB, __shfl_xor_sync(FULL_MASK, tileMaxB, 2));
                float newMaxA = fmaxf(maxA[m], tileMaxA);
                float newMaxB = fmaxf(maxB[m], tileMaxB);
                baseA[m] = newMaxA == NEG_INF ? 0.0f : newMaxA;
                baseB[m] = newMaxB == NEG_INF ? 0.0f : newMaxB;
                float alphaA = exp2f(maxA[m] - baseA[m]);
                float alphaB = exp2f(maxB[m] - baseB[m]);
                maxA[m] = newMaxA;
                maxB[m] = newMaxB;
                sumA[m] *= alphaA;
                sumB[m] *= alphaB;
#pragma unroll
                for (int j = 0; j < FA_DTILES; j++)
                {
                    o[m][j][0] *= alphaA;
                    o[m][j][1] *= alphaA;
                    o[m][j][2] *= alphaB;
                    o[m][j][3] *= alphaB;
                }
            }

            unsigned int valueAddress = (unsigned int)__cvta_generic_to_shared(valueTile + ((lane & 7) + ((lane >> 3) & 1) * 8) * FA_STRIDE + (lane >> 4) * 8);
#pragma unroll
            for (int k = 0; k < FA_KEYS / 16; k++)
            {
                // P's A fragments for keys 16k..16k+15 from the score tiles 2k and 2k + 1.
                unsigned int a[MT][4];
#pragma unroll
                for (int m = 0; m < MT; m++)
                {
                    float p00 = exp2f(s[m][2 * k][0] - baseA[m]), p01 = exp2f(s[m][2 * k][1] - baseA[m]);
                    float p02 = exp2f(s[m][2 * k][2] - baseB[m]), p03 = exp2f(s[m][2 * k][3] - baseB[m]);
                    float p10 = exp2f(s[m][2 * k + 1][0] - baseA[m]), p11 = exp2f(s[m][2 * k + 1][1] - baseA[m]);
                    float p12 = exp2f(s[m][2 * k + 1][2] - baseB[m]), p13 = exp2f(s[m][2 * k + 1][3] - baseB[m]);
                    sumA[m] += p00 + p01 + p10 + p11;
                    sumB[m] += p02 + p03 + p12 + p13;
                    a[m][0] = fa_pack(p00, p01);
                    a[m][1] = fa_pack(p02, p03);
                    a[m][2] = fa_pack(p10, p11);
                    a[m][3] = fa_pack(p12, p13);
                }
#pragma unroll
                for (int j = 0; j < FA_DTILES; j += 2)
                {
                    // Keys 16k..16k+15, dims 8j..8j+15, transposed: B fragments of dim tiles j and j + 1.
                    unsigned int b0, b1, b2, b3;
                    fa_ldmatrix_x4_trans(valueAddress + (unsigned int)((k * 16 * FA_STRIDE + j * 8) * 2), b0, b1, b2, b3);
#pragma unroll
                    for (int m = 0; m < MT; m++)
                    {
                        fa_mma(o[m][j], a[m][0], a[m][1], a[m][2], a[m][3], b0, b1);
                        fa_mma(o[m][j + 1], a[m][0], a[m][1], a[m][2], a[m][3], b2, b3);
                    }
                }
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int m = 0; m < MT; m++)
    {
        float totalA = sumA[m], totalB = sumB[m];
        totalA += __shfl_xor_sync(FULL_MASK, totalA, 1);
        totalA += __shfl_xor_sync(FULL_MASK, totalA, 2);
        totalB += __shfl_xor_sync(FULL_MASK, totalB, 1);
        totalB += __shfl_xor_sync(FULL_MASK, totalB, 2);
        float inverseA = 1.0f / totalA;
        float inverseB = 1.0f / totalB;
        int rowA = warpFirstRow + m * 16 + g;
        int rowB = rowA + 8;
        if (rowA < rows)
        {
            int query = rowA / group;
            size_t at = ((size_t)query * heads + kvHead * group + (rowA - query * group)) * HD + 2 * t;
#pragma unroll
            for (int j = 0; j < FA_DTILES; j++)
            {
                store_act(output, outputLo, at + j * 8, o[m][j][0] * inverseA);
                store_act(output, outputLo, at + j * 8 + 1, o[m][j][1] * inverseA);
            }
        }
        if (rowB < rows)
        {
            int query = rowB / group;
            size_t at = ((size_t)query * heads + kvHead * group + (rowB - query * group)) * HD + 2 * t;
#pragma unroll
            for (int j = 0; j < FA_DTILES; j++)
            {
                store_act(output, outputLo, at + j * 8, o[m][j][2] * inverseB);
                store_act(output, outputLo, at + j * 8 + 1, o[m][j][3] * inverseB);
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(FA_WARPS * 32) flash_attention(
    const float* __restrict__ q, const kv_t* __restrict__ keys, const kv_t* __restrict__ values, act_t* __restrict__ output,
    act_t* __restrict__ outputLo, int n, int start, int heads, int group, int capacity, int window, float scale)
{
    flash_body<2>(q, keys, values, output, outputLo, n, start, heads, group, capacity, window, scale);
}

extern "C" __global__ void __launch_bounds__(FA_WARPS * 32) flash_attention_narrow(
    const float* __restrict__ q, const kv_t* __restrict__ keys, const kv_t* __restrict__ values, act_t* __restrict__ output,
    act_t* __restrict__ outputLo, int n, int start, int heads, int group, int capacity, int window, float scale)
{
    flash_body<1>(q, keys, values, output, outputLo, n, start, heads, group, capacity, window, scale);
}
#endif

// x += y (+ bias[column]), over [count] fp32 elements of rows of width d.
extern "C" __global__ void residual_add(float* __restrict__ x, const float* __restrict__ y, const float* __restrict__ bias, int count, int d)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x)
    {
        float v = y[i];
        if (bias != nullptr)
        {
            v += bias[i % d];
        }
        x[i] += v;
    }
}

// x[row, :] += y[row, :] (+ bias), then out[row, :] = rmsnorm(x[row, :]) as rmsnorm computes it (same sums in the
// same order, so the result is bit-identical to residual_add followed by rmsnorm), in one pass over the row. Grid: one
// block of 256 threads per row.
extern "C" __global__ void residual_rmsnorm(float* __restrict__ x, const float* __restrict__ y, const float* __restrict__ bias,
    const float* __restrict__ weight, act_t* __restrict__ out, act_t* __restrict__ outLo, int d, float eps)
{
    float* row = x + (size_t)blockIdx.x * d;
    const float* add = y + (size_t)blockIdx.x * d;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
    {
        float v = add[i];
        if (bias != nullptr)
        {
            v += bias[i];
        }
        float updated = row[i] + v;
        row[i] = updated;
        sum = fmaf(updated, updated, sum);
    }
    sum = block_sum(sum);
    float scale = 1.0f / sqrtf(sum / (float)d + eps);
    size_t at = (size_t)blockIdx.x * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
    {
        store_act(out, outLo, at + i, weight[i] * (row[i] * scale));
    }
}

// out[row, j] = silu(gate) * up from the fused gate/up projection [rows, 2 ffn] (+ bias), rounded to the matrix
// products' input type (+ the rounding error in outputLo when given).
extern "C" __global__ void swiglu(const float* __restrict__ gateUp, const float* __restrict__ bias, act_t* __restrict__ output, act_t* __restrict__ outputLo, int rows, int ffn)
{
    int count = rows * ffn;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x)
    {
        int row = i / ffn;
        int j = i - row * ffn;
        float g = gateUp[(size_t)row * 2 * ffn + j];
        float u = gateUp[(size_t)row * 2 * ffn + ffn + j];
        if (bias != nullptr)
        {
            g += bias[j];
            u += bias[ffn + j];
        }
        store_act(output, outputLo, i, g / (1.0f + expf(-g)) * u);
    }
}

// Wire layout [layer][kind][token][kvHead][HD] of `dtype` <-> cache layout [layer][kind][kvHead][capacity][HD].
extern "C" __global__ void kv_import(
    const unsigned char* __restrict__ source, int dtype, kv_t* __restrict__ cache, int layers, int kvHeads, int capacity, int start, int tokens)
{
    size_t total = (size_t)layers * 2 * tokens * kvHeads * HD;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
    {
        int d = (int)(i % HD);
        size_t rest = i / HD;
        int h = (int)(rest % kvHeads);
        rest /= kvHeads;
        int token = (int)(rest % tokens);
        size_t layerKind = rest / tokens;
        cache[((layerKind * kvHeads + h) * capacity + start + token) * HD + d] = KV::store(load_dtype(source, i, dtype));
    }
}

extern "C" __global__ void kv_export(
    const kv_t* __restrict__ cache, unsigned char* __restrict__ destination, int dtype, int layers, int kvHeads, int capacity, int start, int tokens)
{
    size_t total = (size_t)layers * 2 * tokens * kvHeads * HD;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
    {
        int d = (int)(i % HD);
        size_t rest = i / HD;
        int h = (int)(rest % kvHeads);
        rest /= kvHeads;
        int token = (int)(rest % tokens);
        size_t layerKind = rest / tokens;
        store_dtype(destination, i, dtype, KV::load(cache[((layerKind * kvHeads + h) * capacity + start + token) * HD + d]));
    }
}

// CacheGen's arithmetic decoding on CUDA cores (the codec's CacheGenCodec.Decode, step for step): one thread per plane
// ((layer, K/V) stream) of a chunk; a warp decodes 32 planes side by side. The host has checked the tables and scales
// (CacheGenCodec.DescribePlanes), so every symbol has a non-zero frequency and the loops end. The stream is read as the
// CPU decoder reads it, zeros past its end; status[plane] gets the bytes consumed (the host requires exactly the
// stream's length), -1 for a bad leading byte or -2 for a target outside the 16-bit CDF. Values decode as
// (symbol - max) * (scale / max) in fp32 without contraction, rounded to dtype, into [plane][token][channel].
__device__ __forceinline__ unsigned int load_u16(const unsigned char* base, int index)
{
    return (unsigned int)base[2 * index] | ((unsigned int)base[2 * index + 1] << 8);
}

extern "C" __global__ void cachegen_decode(
    const unsigned char* __restrict__ payload, const u16* __restrict__ scales, const int* __restrict__ planeInfo,
    unsigned char* __restrict__ destination, int dtype, int planes, int tokens, int channels, long long* __restrict__ status)
{
    int plane = blockIdx.x * blockDim.x + threadIdx.x;
    if (plane >= planes)
    {
        return;
    }

    // planeInfo: [table offset, stream offset, stream length, symbols, max magnitude] per plane.
    const int* info = planeInfo + 5 * plane;
    const unsigned char* tables = payload + info[0];
    const unsigned char* stream = payload + info[1];
    long long length = info[2];
    int n = info[3];
    int max = info[4];
    long long position = 0;
    unsigned int range = 0xffffffffu;
    unsigned int code = 0;
    unsigned int leading = position < length ? stream[position] : 0u;
    position++;
    for (int i = 0; i < 4; i++)
    {
        code = (code << 8) | (position < length ? stream[position] : 0u);
        position++;
    }

    if (leading != 0)
    {
        status[plane] = -1;
        return;
    }

    for (int t = 0; t < tokens; t++)
    {
        float step = __fdiv_rn(f16_t::load(scales[(size_t)plane * tokens + t]), (float)max);
        size_t row = ((size_t)plane * tokens + t) * channels;
        for (int c = 0; c < channels; c++)
        {
            unsigned int unit = range >> 16;
            unsigned int target = code / unit;
            if (target >= 65536u)
            {
                status[plane] = -2;
                return;
            }

            // The largest symbol whose cumulative start is <= target: start(0) = 0, start(k) = table[k - 1].
            const unsigned char* table = tables + (size_t)c * (n - 1) * 2;
            int lo = 0, hi = n - 1;
            while (lo < hi)
            {
                int mid = (lo + hi + 1) >> 1;
                if (load_u16(table, mid - 1) <= target)
                {
                    lo = mid;
                }
                else
                {
                    hi = mid - 1;
                }
            }

            unsigned int start = lo == 0 ? 0u : load_u16(table, lo - 1);
            unsigned int end = lo == n - 1 ? 65536u : load_u16(table, lo);
            code -= unit * start;
            range = unit * (end - start);
            while (range < (1u << 24))
            {
                code = (code << 8) | (position < length ? stream[position] : 0u);
                position++;
                range <<= 8;
            }

            store_dtype(destination, row + c, dtype, __fmul_rn((float)(lo - max), step));
        }
    }

    status[plane] = position;
}

// NVDEC writes samples of more than 8 bits MSB-aligned in 16 bits (value << (16 - depth)); this puts them back in the
// low bits, as the CPU decoder and the stream checksums have them.
extern "C" __global__ void samples_to_lsb(u16* __restrict__ samples, size_t count, int shift)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
    {
        samples[i] = (u16)(samples[i] >> shift);
    }
}

// The video codec's dequantization, from one stream's decoded frames (NVDEC output: all planes of every frame, samples
// of 1 or 2 bytes) to the KV wire layout [layer][kind][token][channel] in dtype. Value (layer, token, channel) is sample
// layerOffsets[layer] + tokenOffsets[token] + channelOffsets[channel] and decodes as min + q * step in fp32, rounded
// like the CPU decoder (no fused multiply-add), so the result is bit-identical to VideoCodec.Decode.
extern "C" __global__ void video_restore(
    const unsigned char* __restrict__ frames, int sampleBytes, const int* __restrict__ tokenOffsets, const int* __restrict__ channelOffsets,
    const int* __restrict__ layerOffsets, const float* __restrict__ mins, const float* __restrict__ steps, unsigned char* __restrict__ destination,
    int dtype, int layers, int kind, int tokens, int channels)
{
    size_t total = (size_t)layers * tokens * channels;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
    {
        int c = (int)(i % channels);
        size_t rest = i / channels;
        int t = (int)(rest % tokens);
        int layer = (int)(rest / tokens);
        size_t at = (size_t)layerOffsets[layer] + tokenOffsets[t] + channelOffsets[c];
        int q = sampleBytes == 1 ? frames[at] : ((const u16*)frames)[at];
        int scale = ((layer * 2) + kind) * channels + c;
        float v = __fadd_rn(mins[scale], __fmul_rn((float)q, steps[scale]));
        store_dtype(destination, (((size_t)layer * 2 + kind) * tokens + t) * channels + c, dtype, v);
    }
}

// Index of the largest logit of each row (the first on ties, like the CPU's ArgMax). Grid: one block of 1024 per row.
extern "C" __global__ void argmax(const float* __restrict__ logits, int* __restrict__ result, int vocab)
{
    __shared__ float bestValues[32];
    __shared__ int bestIndices[32];
    const float* row = logits + (size_t)blockIdx.x * vocab;
    float best = NEG_INF;
    int index = 0x7fffffff;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x)
    {
        float v = row[i];
        if (v > best)
        {
            best = v;
            index = i;
        }
    }
    for (int offset = 16; offset > 0; offset >>= 1)
    {
        float otherValue = __shfl_xor_sync(FULL_MASK, best, offset);
        int otherIndex = __shfl_xor_sync(FULL_MASK, index, offset);
        if (otherValue > best || (otherValue == best && otherIndex < index))
        {
            best = otherValue;
            index = otherIndex;
        }
    }
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    if (lane == 0)
    {
        bestValues[warp] = best;
        bestIndices[warp] = index;
    }
    __syncthreads();
    if (warp == 0)
    {
        int warps = blockDim.x >> 5;
        best = lane < warps ? bestValues[lane] : NEG_INF;
        index = lane < warps ? bestIndices[lane] : 0x7fffffff;
        for (int offset = 16; offset > 0; offset >>= 1)
        {
            float otherValue = __shfl_xor_sync(FULL_MASK, best, offset);
            int otherIndex = __shfl_xor_sync(FULL_MASK, index, offset);
            if (otherValue > best || (otherValue == best && otherIndex < index))
            {
                best = otherValue;
                index = otherIndex;
            }
        }
        if (lane == 0)
        {
            result[blockIdx.x] = index;
        }
    }
}

// dst[i] = uniform in [low, high] from a hash of (i, seed), as `dtype` (random weights for timing model shapes).
extern "C" __global__ void fill_uniform(unsigned char* __restrict__ destination, int dtype, size_t count, float low, float high, unsigned int seed)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
    {
        unsigned long long z = (unsigned long long)i + ((unsigned long long)seed << 40) + 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        float unit = (float)(z >> 40) * (1.0f / 16777216.0f);
        store_dtype(destination, i, dtype, low + (high - low) * unit);
    }
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

#ifdef DECODE_ATTENTION
// Attention of decode-sized steps (n * group <= R rows, e.g. one token of a group of 4 heads) over a long cache,
// flash-decoding style: the key range is cut in `splits` parts (grid x) so that every SM streams its share of the
// cache, and each block reads its part of one KV head's keys and values once for every row of the group, in 16-byte
// loads (HD / 8 lanes per key, several keys per warp). Each warp runs on its own: it takes groups of
// DEC_KPW * DEC_UNROLL consecutive keys, loads their keys and values together (2 * DEC_UNROLL loads in flight per
// lane), and keeps an online softmax per row in registers (scores in log2 units), with no block-wide barrier until
// the warps' states are merged at the end. Writes the output (splits == 1) or the part's (max, sum, values) for
// attention_combine, the max in natural-log units as attention writes it. Needs a 16-bit cache and
// 32 % (HD / 8) == 0. Two entry points: decode_attention_4 (rows <= 4) and decode_attention_8 (rows <= 8).
#define DEC_WARPS 4
#define DEC_UNROLL 4
#define DEC_LPK (HD / 8)
#define DEC_KPW (32 / DEC_LPK)
#define DEC_GROUP (DEC_KPW * DEC_UNROLL)
#define DEC_LOG2E 1.4426950408889634f

template <int R>
__device__ __forceinline__ void decode_body(
    const float* __restrict__ q, const kv_t* __restrict__ keys, const kv_t* __restrict__ values, act_t* __restrict__ output,
    act_t* __restrict__ outputLo, float* __restrict__ partial, int n, int start, int heads, int group, int capacity, int window, float scale, int splits)
{
    __shared__ float warpMax[DEC_WARPS][R], warpSum[DEC_WARPS][R];
    __shared__ __align__(16) float warpAcc[DEC_WARPS][R][HD];

    int kvHead = blockIdx.y;
    int split = blockIdx.x;
    int warp = threadIdx.x >> 5;
    int lane = threadIdx.x & 31;
    int sub = lane / DEC_LPK;
    int part = lane - sub * DEC_LPK;
    int rows = n * group;
    int keyLo = max(0, start - window + 1);
    int keyHi = start + n;
    int per = (keyHi - keyLo + splits - 1) / splits;
    int splitLo = keyLo + split * per;
    int splitHi = min(keyHi, splitLo + per);

    float qr[R][8];
    int position[R];
#pragma unroll
    for (int r = 0; r < R; r++)
    {
        int query = r / group;
        position[r] = start + query;
#pragma unroll
        for (int e = 0; e < 8; e++)
        {
            qr[r][e] = 0.0f;
        }
        if (r < rows)
        {
            const float* source = q + ((size_t)query * heads + kvHead * group + (r - query * group)) * HD + part * 8;
            float4 lo = *(const float4*)source;
            float4 hi = *(const float4*)(source + 4);
            float scaleLog2 = scale * DEC_LOG2E;
            qr[r][0] = lo.x * scaleLog2; qr[r][1] = lo.y * scaleLog2; qr[r][2] = lo.z * scaleLog2; qr[r][3] = lo.w * scaleLog2;
            qr[r][4] = hi.x * scaleLog2; qr[r][5] = hi.y * scaleLog2; qr[r][6] = hi.z * scaleLog2; qr[r][7] = hi.w * scaleLog2;
        }
    }

    float m[R], l[R], acc[R][8];
#pragma unroll
    for (int r = 0; r < R; r++)
    {
        m[r] = NEG_INF;
        l[r] = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; e++)
        {
            acc[r][e] = 0.0f;
        }
    }

    const kv_t* keyBase = keys + (size_t)kvHead * capacity * HD + part * 8;
    const kv_t* valueBase = values + (size_t)kvHead * capacity * HD + part * 8;
    for (int base = splitLo + warp * DEC_GROUP; base < splitHi; base += DEC_WARPS * DEC_GROUP)
    {
        uint4 kraw[DEC_UNROLL], vraw[DEC_UNROLL];
#pragma unroll
        for (int u = 0; u < DEC_UNROLL; u++)
        {
            int key = base + u * DEC_KPW + sub;
            bool inside = key < splitHi;
            kraw[u] = inside ? __ldg((const uint4*)(keyBase + (size_t)key * HD)) : make_uint4(0, 0, 0, 0);
            vraw[u] = inside ? __ldg((const uint4*)(valueBase + (size_t)key * HD)) : make_uint4(0, 0, 0, 0);
        }

        float sc[DEC_UNROLL][R];
#pragma unroll
        for (int u = 0; u < DEC_UNROLL; u++)
        {
            int key = base + u * DEC_KPW + sub;
            float k[8];
            unpack8<KV>(kraw[u], k);
#pragma unroll
            for (int r = 0; r < R; r++)
            {
                float dot = 0.0f;
#pragma unroll
                for (int e = 0; e < 8; e++)
                {
                    dot = fmaf(qr[r][e], k[e], dot);
                }
#pragma unroll
                for (int offset = DEC_LPK / 2; offset > 0; offset >>= 1)
                {
                    dot += __shfl_xor_sync(FULL_MASK, dot, offset);
                }
                bool visible = r < rows && key < splitHi && key <= position[r] && key > position[r] - window;
                sc[u][r] = visible ? dot : NEG_INF;
            }
        }

#pragma unroll
        for (int r = 0; r < R; r++)
        {
            if (r < rows)
            {
                float stepMax = sc[0][r];
#pragma unroll
                for (int u = 1; u < DEC_UNROLL; u++)
                {
                    stepMax = fmaxf(stepMax, sc[u][r]);
                }
#pragma unroll
                for (int offset = DEC_LPK; offset < 32; offset <<= 1)
                {
                    stepMax = fmaxf(stepMax, __shfl_xor_sync(FULL_MASK, stepMax, offset));
                }
                float newMax = fmaxf(m[r], stepMax);
                float shift = newMax == NEG_INF ? 0.0f : newMax;
                float alpha = exp2f(m[r] - shift);
                m[r] = newMax;
                l[r] *= alpha;
#pragma unroll
                for (int e = 0; e < 8; e++)
                {
                    acc[r][e] *= alpha;
                }
#pragma unroll
                for (int u = 0; u < DEC_UNROLL; u++)
                {
                    sc[u][r] = exp2f(sc[u][r] - shift);
                    l[r] += sc[u][r];
                }
            }
        }

#pragma unroll
        for (int u = 0; u < DEC_UNROLL; u++)
        {
            float v[8];
            unpack8<KV>(vraw[u], v);
#pragma unroll
            for (int r = 0; r < R; r++)
            {
                if (r < rows)
                {
#pragma unroll
                    for (int e = 0; e < 8; e++)
                    {
                        acc[r][e] = fmaf(sc[u][r], v[e], acc[r][e]);
                    }
                }
            }
        }
    }

    // The warp's key slots share one max per row: sum their shares, then merge the warps.
#pragma unroll
    for (int r = 0; r < R; r++)
    {
        if (r < rows)
        {
            float total = l[r];
#pragma unroll
            for (int offset = DEC_LPK; offset < 32; offset <<= 1)
            {
                total += __shfl_xor_sync(FULL_MASK, total, offset);
            }
#pragma unroll
            for (int e = 0; e < 8; e++)
            {
                float v = acc[r][e];
#pragma unroll
                for (int offset = DEC_LPK; offset < 32; offset <<= 1)
                {
                    v += __shfl_xor_sync(FULL_MASK, v, offset);
                }
                if (sub == 0)
                {
                    warpAcc[warp][r][part * 8 + e] = v;
                }
            }
            if (lane == 0)
            {
                warpMax[warp][r] = m[r];
                warpSum[warp][r] = total;
            }
        }
    }
    __syncthreads();

    for (int i = threadIdx.x; i < rows * HD; i += DEC_WARPS * 32)
    {
        int r = i / HD;
        int d = i - r * HD;
        float maximum = NEG_INF;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++)
        {
            maximum = fmaxf(maximum, warpMax[w][r]);
        }
        float shift = maximum == NEG_INF ? 0.0f : maximum;
        float v = 0.0f, sum = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++)
        {
            float weight = exp2f(warpMax[w][r] - shift);
            v = fmaf(warpAcc[w][r][d], weight, v);
            sum = fmaf(warpSum[w][r], weight, sum);
        }
        int query = r / group;
        int head = kvHead * group + (r - query * group);
        if (splits == 1)
        {
            store_act(output, outputLo, ((size_t)query * heads + head) * HD + d, v / sum);
        }
        else
        {
            float* target = partial + (((size_t)split * n + query) * heads + head) * (HD + 2);
            if (d == 0)
            {
                target[0] = maximum == NEG_INF ? NEG_INF : maximum / DEC_LOG2E;
                target[1] = sum;
            }
            target[2 + d] = v;
        }
    }
}

extern "C" __global__ void __launch_bounds__(DEC_WARPS * 32) decode_attention_4(
    const float* __restrict__ q, const kv_t* __restrict__ keys, const kv_t* __restrict__ values, act_t* __restrict__ output,
    act_t* __restrict__ outputLo, float* __restrict__ partial, int n, int start, int heads, int group, int capacity, int window, float scale, int splits)
{
    decode_body<4>(q, keys, values, output, outputLo, partial, n, start, heads, group, capacity, window, scale, splits);
}

extern "C" __global__ void __launch_bounds__(DEC_WARPS * 32) decode_attention_8(
    const float* __restrict__ q, const kv_t* __restrict__ keys, const kv_t* __restrict__ values, act_t* __restrict__ output,
    act_t* __restrict__ outputLo, float* __restrict__ partial, int n, int start, int heads, int group, int capacity, int window, float scale, int splits)
{
    decode_body<8>(q, keys, values, output, outputLo, partial, n, start, heads, group, capacity, window, scale, splits);
}
#endif

#ifdef GEMV
// y[r, o] = Σ_i x[r, i] w[o, i] in fp32 for a few rows (decode steps: rows <= GEMV_ROWS): the weight streams from
// memory once, in 16-byte loads, GEMV_OUT output rows per warp with GEMV_OUT * U loads per lane in flight; x (a few
// KB) is read through the L1 cache. Needs 16-bit products, inFeatures % 8 == 0 and 16-byte aligned x and w. Grid:
// output rows / (GEMV_WARPS * GEMV_OUT) blocks. gemv (U = 8) is the engine's; gemv_u4 is kept for the device
// benchmark's comparison (bench/pytorch/flash_check.py).
#define GEMV_ROWS 4
#define GEMV_OUT 2
#define GEMV_WARPS 8

template <int GEMV_UNROLL>
__device__ __forceinline__ void gemv_body(
    const act_t* __restrict__ x, const act_t* __restrict__ w, float* __restrict__ y, int rows, int inFeatures, int outFeatures)
{
    int warp = threadIdx.x >> 5;
    int lane = threadIdx.x & 31;
    int out0 = (blockIdx.x * GEMV_WARPS + warp) * GEMV_OUT;
    if (out0 >= outFeatures)
    {
        return;
    }

    int vectors = inFeatures / 8;
    float sum[GEMV_OUT][GEMV_ROWS];
#pragma unroll
    for (int o = 0; o < GEMV_OUT; o++)
    {
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++)
        {
            sum[o][r] = 0.0f;
        }
    }

    const uint4* weightRows[GEMV_OUT];
#pragma unroll
    for (int o = 0; o < GEMV_OUT; o++)
    {
        weightRows[o] = (const uint4*)(w + (size_t)min(out0 + o, outFeatures - 1) * inFeatures);
    }
    const uint4* xs = (const uint4*)x;
    for (int c0 = lane; c0 < vectors; c0 += 32 * GEMV_UNROLL)
    {
        uint4 raw[GEMV_OUT][GEMV_UNROLL];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++)
        {
            int c = c0 + u * 32;
#pragma unroll
            for (int o = 0; o < GEMV_OUT; o++)
            {
                raw[o][u] = c < vectors ? __ldg(weightRows[o] + c) : make_uint4(0, 0, 0, 0);
            }
        }
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++)
        {
            int c = c0 + u * 32;
            if (c < vectors)
            {
#pragma unroll
                for (int r = 0; r < GEMV_ROWS; r++)
                {
                    if (r < rows)
                    {
                        float xf[8];
                        unpack8<ACT>(__ldg(xs + (size_t)r * vectors + c), xf);
#pragma unroll
                        for (int o = 0; o < GEMV_OUT; o++)
                        {
                            float wf[8];
                            unpack8<ACT>(raw[o][u], wf);
#pragma unroll
                            for (int e = 0; e < 8; e++)
                            {
                                sum[o][r] = fmaf(xf[e], wf[e], sum[o][r]);
                            }
                        }
                    }
                }
            }
        }
    }

#pragma unroll
    for (int o = 0; o < GEMV_OUT; o++)
    {
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++)
        {
            if (r < rows)
            {
                float v = warp_sum(sum[o][r]);
                if (lane == 0 && out0 + o < outFeatures)
                {
                    y[(size_t)r * outFeatures + out0 + o] = v;
                }
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32) gemv(
    const act_t* __restrict__ x, const act_t* __restrict__ w, float* __restrict__ y, int rows, int inFeatures, int outFeatures)
{
    gemv_body<8>(x, w, y, rows, inFeatures, outFeatures);
}

extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_u4(
    const act_t* __restrict__ x, const act_t* __restrict__ w, float* __restrict__ y, int rows, int inFeatures, int outFeatures)
{
    gemv_body<4>(x, w, y, rows, inFeatures, outFeatures);
}
#endif
