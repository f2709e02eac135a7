// The transformer's layer kernels: embedding, norms, RoPE, residual adds, SwiGLU, the decode GEMV and argmax.
// Part of the engine's NVRTC program: included by Kernels.cu.

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
