// Moving KV between the wire layout and the cache layout (import of restored chunks, export for storing).
// Part of the engine's NVRTC program: included by Kernels.cu.

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
