namespace KvFetcher.Cuda.Nvdec;

/// <summary>What the device's NVDEC engines report for HEVC 4:4:4 at one bit depth (cuvidGetDecoderCaps).</summary>
/// <param name="Depth">The bit depth asked about.</param>
/// <param name="IsSupported">Whether HEVC 4:4:4 at this depth decodes.</param>
/// <param name="Decoders">How many NVDEC engines decode it.</param>
/// <param name="MinWidth">The smallest coded width.</param>
/// <param name="MinHeight">The smallest coded height.</param>
/// <param name="MaxWidth">The largest coded width.</param>
/// <param name="MaxHeight">The largest coded height.</param>
/// <param name="OutputFormatMask">Bit i set: surface format i (0 NV12, 1 P016, 2 YUV444, 3 YUV444 16-bit) is available.</param>
public readonly record struct NvdecCapabilities(int Depth, bool IsSupported, int Decoders, int MinWidth, int MinHeight, int MaxWidth, int MaxHeight, int OutputFormatMask);
