// Restoring fetched chunks on the GPU: CacheGen's arithmetic decoder, and the video codec's dequantization of
// NVDEC's output (CudaRestoreKernels).
// Part of the engine's NVRTC program: included by Kernels.cu.

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
