// The kvtc codec's GPU decoder (CudaKvtcKernels), a program of its own (compiled on first use, so a kvtc problem
// never stops the engine's kernels): the rANS segments decoded side by side into quantized coefficients, the exact
// tokens copied as stored, and after the inverse transform (a cuBLAS product) the mean, the keys' rotary embedding and
// the conversion to the KV type. The host (KvtcChunkLayout in the codecs) has checked every offset, length and count
// these kernels use; each segment's own stream is checked here and reported in status.
// The host defines what Common.cuh needs (HEAD_DIM, KV, ACT, EMB); these kernels take every size as an argument.
#include "Common.cuh"

#define KVTC_WIDTHS 7
#define KVTC_SCALE 12
#define KVTC_SLOTS 4096u
#define KVTC_LOWER 8388608u
#define KVTC_FIELDS 9
#define KVTC_ESCAPE 255
#define KVTC_MAX_MAGNITUDE 127

__device__ __forceinline__ unsigned int kvtc_load_u32(const unsigned char* p)
{
    return (unsigned int)p[0] | ((unsigned int)p[1] << 8) | ((unsigned int)p[2] << 16) | ((unsigned int)p[3] << 24);
}

// One decoding step of a state (StaticRans.SegmentTable.Decode): the symbol of its slot, then the state before it.
__device__ __forceinline__ int kvtc_step(unsigned int& x, const unsigned char* slots, const unsigned int* entries)
{
    unsigned int slot = x & (KVTC_SLOTS - 1u);
    int symbol = slots[slot];
    unsigned int entry = entries[symbol];
    x = (entry >> 16) * (x >> KVTC_SCALE) + slot - (entry & 0xffffu);
    return symbol;
}

// Reads renormalization bytes until the state is back in range; false when the stream ends first. A state after a
// step is at least 2^11 (it was at least 2^23 before), so at most two bytes are read.
__device__ __forceinline__ bool kvtc_refill(unsigned int& x, const unsigned char* stream, int length, int& read)
{
    while (x < KVTC_LOWER)
    {
        if (read >= length)
        {
            return false;
        }
        x = (x << 8) | stream[read++];
    }
    return true;
}

// Where the symbols of one bit width go: block by block (blocks without components of the width skipped), each block's
// coded tokens, each token's components of the width (components[widthOffsets[..] + j], ascending).
struct kvtc_cursor
{
    int block, token, j, m, d;
    const int* list;
    size_t base;
};

__device__ __forceinline__ void kvtc_enter(kvtc_cursor& c, int bits, int blocks, int coded, const int* widthCounts, const int* widthOffsets,
    const int* components, const int* channelStarts)
{
    while (c.block < blocks && widthCounts[bits * blocks + c.block] == 0)
    {
        c.block++;
    }
    if (c.block < blocks)
    {
        c.m = widthCounts[bits * blocks + c.block];
        c.list = components + widthOffsets[bits * blocks + c.block];
        c.d = channelStarts[c.block + 1] - channelStarts[c.block];
        c.base = (size_t)coded * channelStarts[c.block];
    }
}

// Stores one decoded symbol's coefficient at the cursor and moves the cursor on: 0, or the status of a problem (3 more
// escapes than the segment declares, 4 a symbol past the last block).
__device__ __forceinline__ int kvtc_emit(int symbol, kvtc_cursor& c, int& used, int escapes, const unsigned char* escapeValues, int bits, int blocks,
    int coded, const int* widthCounts, const int* widthOffsets, const int* components, const int* channelStarts, float* coefficients)
{
    if (c.block >= blocks)
    {
        return 4;
    }

    int q = symbol - KVTC_MAX_MAGNITUDE;
    if (symbol == KVTC_ESCAPE)
    {
        if (used >= escapes)
        {
            return 3;
        }
        q = (int)(short)(unsigned short)((unsigned int)escapeValues[2 * used] | ((unsigned int)escapeValues[2 * used + 1] << 8));
        used++;
    }

    coefficients[c.base + (size_t)c.token * c.d + c.list[c.j]] = (float)q;
    if (++c.j == c.m)
    {
        c.j = 0;
        if (++c.token == coded)
        {
            c.token = 0;
            c.block++;
            kvtc_enter(c, bits, blocks, coded, widthCounts, widthOffsets, components, channelStarts);
        }
    }

    return 0;
}

// One thread per segment (segments: KVTC_FIELDS ints each, KvtcChunkLayout's fields: stream offset, stream bytes,
// symbols, first escape, escapes, bit width, first block, first coded token, first component index). Each decoded
// coefficient q goes to coefficients (fp32, [block][coded token][component], block b at coded * channelStarts[b]) as q
// (the steps are folded into the inverse matrices). status[segment]: 0 decoded and checked; 1 an
// initial state out of range; 2 the stream ended early; 3 more escapes than declared; 4 symbols past the last block;
// 5 bytes left over, final states other than the initial one, or fewer escapes than declared.
extern "C" __global__ void kvtc_decode_segments(
    const unsigned char* __restrict__ payload, const unsigned char* __restrict__ slotSymbols, const unsigned int* __restrict__ symbolEntries,
    const int* __restrict__ segments, int segmentCount, const int* __restrict__ widthCounts, const int* __restrict__ widthOffsets,
    const int* __restrict__ components, const int* __restrict__ channelStarts, int blocks, int coded, int escapeOffset,
    float* __restrict__ coefficients, int* __restrict__ status)
{
    __shared__ unsigned int s_slots[KVTC_WIDTHS * KVTC_SLOTS / 4];
    __shared__ unsigned int s_entries[KVTC_WIDTHS * 256];
    const unsigned int* slotWords = (const unsigned int*)slotSymbols;
    for (int i = threadIdx.x; i < KVTC_WIDTHS * (int)KVTC_SLOTS / 4; i += blockDim.x)
    {
        s_slots[i] = slotWords[i];
    }
    for (int i = threadIdx.x; i < KVTC_WIDTHS * 256; i += blockDim.x)
    {
        s_entries[i] = symbolEntries[i];
    }
    __syncthreads();

    int index = blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= segmentCount)
    {
        return;
    }

    const int* segment = segments + (size_t)index * KVTC_FIELDS;
    const unsigned char* stream = payload + segment[0];
    int length = segment[1];
    int n = segment[2];
    int firstEscape = segment[3];
    int escapes = segment[4];
    int bits = segment[5];
    const unsigned char* slots = (const unsigned char*)s_slots + (size_t)(bits - 1) * KVTC_SLOTS;
    const unsigned int* entries = s_entries + (bits - 1) * 256;
    const unsigned char* escapeValues = payload + escapeOffset + 2 * (size_t)firstEscape;

    kvtc_cursor c;
    c.block = segment[6];
    c.token = segment[7];
    c.j = segment[8];
    c.m = 0;
    c.d = 0;
    c.list = components;
    c.base = 0;
    kvtc_enter(c, bits, blocks, coded, widthCounts, widthOffsets, components, channelStarts);

    unsigned int x0 = kvtc_load_u32(stream);
    unsigned int x1 = kvtc_load_u32(stream + 4);
    if (x0 < KVTC_LOWER || x1 < KVTC_LOWER || x0 >= (KVTC_LOWER << 8) || x1 >= (KVTC_LOWER << 8))
    {
        status[index] = 1;
        return;
    }

    int read = 8;
    int used = 0;
    for (int i = 0; i < n; i += 2)
    {
        // Symbol i with state 0 and i + 1 with state 1, stepped side by side; renormalized in the encoder's order.
        int symbol0 = kvtc_step(x0, slots, entries);
        bool second = i + 1 < n;
        int symbol1 = second ? kvtc_step(x1, slots, entries) : 0;
        if (!kvtc_refill(x0, stream, length, read) || (second && !kvtc_refill(x1, stream, length, read)))
        {
            status[index] = 2;
            return;
        }

        int problem = kvtc_emit(symbol0, c, used, escapes, escapeValues, bits, blocks, coded, widthCounts, widthOffsets, components, channelStarts, coefficients);
        if (problem == 0 && second)
        {
            problem = kvtc_emit(symbol1, c, used, escapes, escapeValues, bits, blocks, coded, widthCounts, widthOffsets, components, channelStarts, coefficients);
        }

        if (problem != 0)
        {
            status[index] = problem;
            return;
        }
    }

    status[index] = read == length && x0 == KVTC_LOWER && x1 == KVTC_LOWER && used == escapes ? 0 : 5;
}

// The exact tokens, as stored: the payload's first planes * (head + tail) * rowBytes bytes, per plane the head rows then
// the tail rows, to tokens [0, head) and [tokens - tail, tokens) of each plane.
extern "C" __global__ void kvtc_copy_exact(const unsigned char* __restrict__ payload, unsigned char* __restrict__ destination, int planes, int tokens,
    int head, int tail, int rowBytes)
{
    size_t perPlane = (size_t)(head + tail) * rowBytes;
    size_t total = perPlane * planes;
    size_t headBytes = (size_t)head * rowBytes;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
    {
        size_t p = i / perPlane;
        size_t r = i - p * perPlane;
        size_t planeStart = p * (size_t)tokens * rowBytes;
        size_t at = r < headBytes ? planeStart + r : planeStart + (size_t)(tokens - tail) * rowBytes + (r - headBytes);
        destination[at] = payload[i];
    }
}

// The coded tokens from the inverse transform's output y (fp32, [block][coded token][block channel], block b at
// coded * channelStarts[b]): plus the block's mean, keys turned by their rotary embedding at position
// positionStart + t (pairing 1: channels i and i + headDim / 2; 2: 2i and 2i + 1; 0: none), the angle the fp32
// product of the position and the pair's inverse frequency and its cosine and sine taken in double (as the codec
// does), without contraction; converted to dtype into [plane][token][channel] at token head + t.
extern "C" __global__ void kvtc_finish(
    const float* __restrict__ y, const float* __restrict__ means, const int* __restrict__ channelStarts, const float* __restrict__ inverseFrequencies,
    int pairing, int headDim, unsigned char* __restrict__ destination, int dtype, int layers, int groupLayers, int tokens, int head, int coded,
    int channels, long long positionStart)
{
    size_t total = (size_t)layers * 2 * coded * channels;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
    {
        int c = (int)(i % channels);
        size_t rest = i / channels;
        int t = (int)(rest % coded);
        int p = (int)(rest / coded);
        int layer = p >> 1;
        int kind = p & 1;
        int block = (layer / groupLayers) * 2 + kind;
        int ch = (layer % groupLayers) * channels + c;
        int d = channelStarts[block + 1] - channelStarts[block];
        const float* row = y + (size_t)coded * channelStarts[block] + (size_t)t * d;
        const float* mean = means + channelStarts[block];
        float v = __fadd_rn(row[ch], mean[ch]);
        if (kind == 0 && pairing != 0)
        {
            int half = headDim / 2;
            int within = c % headDim;
            bool first;
            int pair;
            int partner;
            if (pairing == 1)
            {
                first = within < half;
                pair = first ? within : within - half;
                partner = first ? ch + half : ch - half;
            }
            else
            {
                first = (within & 1) == 0;
                pair = within >> 1;
                partner = first ? ch + 1 : ch - 1;
            }

            float other = __fadd_rn(row[partner], mean[partner]);
            float angle = __fmul_rn((float)(positionStart + t), inverseFrequencies[pair]);
            float cs = (float)cos((double)angle);
            float sn = (float)sin((double)angle);
            // (a, b) -> (a cos - b sin, b cos + a sin)
            v = first ? __fsub_rn(__fmul_rn(v, cs), __fmul_rn(other, sn)) : __fadd_rn(__fmul_rn(v, cs), __fmul_rn(other, sn));
        }

        store_dtype(destination, ((size_t)p * tokens + head + t) * channels + c, dtype, v);
    }
}
