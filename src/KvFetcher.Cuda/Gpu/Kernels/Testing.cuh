// Kernels for measurement, not inference: random weights for timing model shapes.
// Part of the engine's NVRTC program: included by Kernels.cu.

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
