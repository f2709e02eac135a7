// Attention over the KV cache: the CUDA-core reference kernel and its split combine, the tensor-core flash kernels
// (prefill, TC_ATTENTION) and the split-K decode kernels (DECODE_ATTENTION).
// Part of the engine's NVRTC program: included by Kernels.cu.

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
