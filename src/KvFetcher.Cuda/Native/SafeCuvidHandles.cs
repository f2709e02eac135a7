using Microsoft.Win32.SafeHandles;

namespace KvFetcher.Cuda.Native;

/// <summary>An NVDEC decoder (cuvidCreateDecoder): a resource of its CUDA context, freed with the context current.</summary>
internal sealed unsafe class SafeCuvidDecoderHandle : SafeCudaChildHandle
{
    /// <summary>Creates a decoder for <paramref name="info"/>; <paramref name="context"/> must be current.</summary>
    public static SafeCuvidDecoderHandle Create(SafeCudaContextHandle context, ref CuvidDecodeCreateInfo info)
    {
        IntPtr decoder;
        fixed (CuvidDecodeCreateInfo* pointer = &info)
        {
            Check.Nvcuvid(Interop.Nvcuvid.CreateDecoder(&decoder, pointer));
        }

        var result = new SafeCuvidDecoderHandle();
        result.Attach(context, decoder);
        return result;
    }

    protected override void Free(IntPtr value) => _ = Interop.Nvcuvid.DestroyDecoder(value);
}

/// <summary>An NVDEC bitstream parser (cuvidCreateVideoParser).</summary>
internal sealed class SafeCuvidParserHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public SafeCuvidParserHandle()
        : base(ownsHandle: true)
    {
    }

    protected override bool ReleaseHandle() => Interop.Nvcuvid.DestroyVideoParser(handle) == CudaResult.Success;
}

/// <summary>An NVDEC context lock (cuvidCtxLockCreate): serializes the decoder's use of its CUDA context.</summary>
internal sealed class SafeCuvidContextLockHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public SafeCuvidContextLockHandle()
        : base(ownsHandle: true)
    {
    }

    protected override bool ReleaseHandle() => Interop.Nvcuvid.CtxLockDestroy(handle) == CudaResult.Success;
}
