// The engine's own CUDA kernels, compiled at run time by NVRTC for the device at hand as one program
// (Gpu/KernelModule.cs): this file names the parts, split by concern; each is embedded in the assembly and handed
// to NVRTC as a header of this name. The defines the host passes are listed in Common.cuh.
#include "Common.cuh"
#include "Layers.cuh"
#include "Attention.cuh"
#include "KvTransfer.cuh"
#include "Restore.cuh"
#include "Testing.cuh"
