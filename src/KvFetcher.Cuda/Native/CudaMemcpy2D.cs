using System.Runtime.InteropServices;

namespace KvFetcher.Cuda.Native;

/// <summary>CUmemorytype.</summary>
internal enum CudaMemoryType
{
    Host = 1,
    Device = 2,
}

/// <summary>CUDA_MEMCPY2D (128 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 128)]
internal unsafe struct CudaMemcpy2D
{
    [FieldOffset(0)] public nuint SourceXInBytes;
    [FieldOffset(8)] public nuint SourceY;
    [FieldOffset(16)] public CudaMemoryType SourceMemoryType;
    [FieldOffset(24)] public void* SourceHost;
    [FieldOffset(32)] public ulong SourceDevice;
    [FieldOffset(40)] public IntPtr SourceArray;
    [FieldOffset(48)] public nuint SourcePitch;
    [FieldOffset(56)] public nuint DestinationXInBytes;
    [FieldOffset(64)] public nuint DestinationY;
    [FieldOffset(72)] public CudaMemoryType DestinationMemoryType;
    [FieldOffset(80)] public void* DestinationHost;
    [FieldOffset(88)] public ulong DestinationDevice;
    [FieldOffset(96)] public IntPtr DestinationArray;
    [FieldOffset(104)] public nuint DestinationPitch;
    [FieldOffset(112)] public nuint WidthInBytes;
    [FieldOffset(120)] public nuint Height;
}
