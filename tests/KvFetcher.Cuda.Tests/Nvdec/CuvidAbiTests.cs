using System.Runtime.InteropServices;
using KvFetcher.Cuda.Native;

namespace KvFetcher.Cuda.Tests.Nvdec;

/// <summary>
/// The NVDECODE structures' sizes and field offsets against the C ABI: the expected values were printed by a C program
/// (sizeof / offsetof) compiled on x86-64 Linux against the NVDECODE API 11.1 headers (cuviddec.h, nvcuvid.h) as
/// Debian's libffmpeg-nvenc-dev 11.1.5.2 ships them. They hold everywhere: no GPU needed.
/// </summary>
public class CuvidAbiTests
{
    public static TheoryData<string, int> Sizes => new()
    {
        { nameof(CuvidDecodeCaps), 88 },
        { nameof(CuvidDecodeCreateInfo), 176 },
        { nameof(CuvidProcParams), 264 },
        { nameof(CuvidVideoFormat), 64 },
        { nameof(CuvidSourceDataPacket), 32 },
        { nameof(CuvidParserDisplayInfo), 24 },
        { nameof(CuvidParserParams), 136 },
        { nameof(CuvidGetDecodeStatus), 192 },
        { nameof(CudaMemcpy2D), 128 },
    };

    public static TheoryData<string, string, int> Offsets => new()
    {
        { nameof(CuvidDecodeCaps), nameof(CuvidDecodeCaps.BitDepthMinus8), 8 },
        { nameof(CuvidDecodeCaps), nameof(CuvidDecodeCaps.IsSupported), 24 },
        { nameof(CuvidDecodeCaps), nameof(CuvidDecodeCaps.NumNvdecs), 25 },
        { nameof(CuvidDecodeCaps), nameof(CuvidDecodeCaps.OutputFormatMask), 26 },
        { nameof(CuvidDecodeCaps), nameof(CuvidDecodeCaps.MaxWidth), 28 },
        { nameof(CuvidDecodeCaps), nameof(CuvidDecodeCaps.MaxMacroblockCount), 36 },
        { nameof(CuvidDecodeCaps), nameof(CuvidDecodeCaps.MinWidth), 40 },
        { nameof(CuvidDecodeCaps), nameof(CuvidDecodeCaps.MinHeight), 42 },
        { nameof(CuvidDecodeCreateInfo), nameof(CuvidDecodeCreateInfo.NumDecodeSurfaces), 16 },
        { nameof(CuvidDecodeCreateInfo), nameof(CuvidDecodeCreateInfo.CodecType), 24 },
        { nameof(CuvidDecodeCreateInfo), nameof(CuvidDecodeCreateInfo.ChromaFormat), 28 },
        { nameof(CuvidDecodeCreateInfo), nameof(CuvidDecodeCreateInfo.CreationFlags), 32 },
        { nameof(CuvidDecodeCreateInfo), nameof(CuvidDecodeCreateInfo.BitDepthMinus8), 40 },
        { nameof(CuvidDecodeCreateInfo), nameof(CuvidDecodeCreateInfo.IntraDecodeOnly), 48 },
        { nameof(CuvidDecodeCreateInfo), nameof(CuvidDecodeCreateInfo.MaxWidth), 56 },
        { nameof(CuvidDecodeCreateInfo), nameof(CuvidDecodeCreateInfo.MaxHeight), 64 },
        { nameof(CuvidDecodeCreateInfo), nameof(CuvidDecodeCreateInfo.DisplayArea), 80 },
        { nameof(CuvidDecodeCreateInfo), nameof(CuvidDecodeCreateInfo.OutputFormat), 88 },
        { nameof(CuvidDecodeCreateInfo), nameof(CuvidDecodeCreateInfo.DeinterlaceMode), 92 },
        { nameof(CuvidDecodeCreateInfo), nameof(CuvidDecodeCreateInfo.TargetWidth), 96 },
        { nameof(CuvidDecodeCreateInfo), nameof(CuvidDecodeCreateInfo.TargetHeight), 104 },
        { nameof(CuvidDecodeCreateInfo), nameof(CuvidDecodeCreateInfo.NumOutputSurfaces), 112 },
        { nameof(CuvidDecodeCreateInfo), nameof(CuvidDecodeCreateInfo.VideoLock), 120 },
        { nameof(CuvidDecodeCreateInfo), nameof(CuvidDecodeCreateInfo.TargetRect), 128 },
        { nameof(CuvidProcParams), nameof(CuvidProcParams.TopFieldFirst), 8 },
        { nameof(CuvidProcParams), nameof(CuvidProcParams.OutputStream), 56 },
        { nameof(CuvidVideoFormat), nameof(CuvidVideoFormat.ProgressiveSequence), 12 },
        { nameof(CuvidVideoFormat), nameof(CuvidVideoFormat.BitDepthLumaMinus8), 13 },
        { nameof(CuvidVideoFormat), nameof(CuvidVideoFormat.BitDepthChromaMinus8), 14 },
        { nameof(CuvidVideoFormat), nameof(CuvidVideoFormat.MinNumDecodeSurfaces), 15 },
        { nameof(CuvidVideoFormat), nameof(CuvidVideoFormat.CodedWidth), 16 },
        { nameof(CuvidVideoFormat), nameof(CuvidVideoFormat.CodedHeight), 20 },
        { nameof(CuvidVideoFormat), nameof(CuvidVideoFormat.DisplayLeft), 24 },
        { nameof(CuvidVideoFormat), nameof(CuvidVideoFormat.ChromaFormat), 40 },
        { nameof(CuvidSourceDataPacket), nameof(CuvidSourceDataPacket.PayloadSize), 8 },
        { nameof(CuvidSourceDataPacket), nameof(CuvidSourceDataPacket.Payload), 16 },
        { nameof(CuvidSourceDataPacket), nameof(CuvidSourceDataPacket.Timestamp), 24 },
        { nameof(CuvidParserDisplayInfo), nameof(CuvidParserDisplayInfo.TopFieldFirst), 8 },
        { nameof(CuvidParserDisplayInfo), nameof(CuvidParserDisplayInfo.Timestamp), 16 },
        { nameof(CuvidParserParams), nameof(CuvidParserParams.MaxNumDecodeSurfaces), 4 },
        { nameof(CuvidParserParams), nameof(CuvidParserParams.ErrorThreshold), 12 },
        { nameof(CuvidParserParams), nameof(CuvidParserParams.MaxDisplayDelay), 16 },
        { nameof(CuvidParserParams), nameof(CuvidParserParams.UserData), 40 },
        { nameof(CuvidParserParams), nameof(CuvidParserParams.SequenceCallback), 48 },
        { nameof(CuvidParserParams), nameof(CuvidParserParams.DecodePicture), 56 },
        { nameof(CuvidParserParams), nameof(CuvidParserParams.DisplayPicture), 64 },
        { nameof(CudaMemcpy2D), nameof(CudaMemcpy2D.SourceMemoryType), 16 },
        { nameof(CudaMemcpy2D), nameof(CudaMemcpy2D.SourceDevice), 32 },
        { nameof(CudaMemcpy2D), nameof(CudaMemcpy2D.SourcePitch), 48 },
        { nameof(CudaMemcpy2D), nameof(CudaMemcpy2D.DestinationMemoryType), 72 },
        { nameof(CudaMemcpy2D), nameof(CudaMemcpy2D.DestinationHost), 80 },
        { nameof(CudaMemcpy2D), nameof(CudaMemcpy2D.DestinationDevice), 88 },
        { nameof(CudaMemcpy2D), nameof(CudaMemcpy2D.DestinationPitch), 104 },
        { nameof(CudaMemcpy2D), nameof(CudaMemcpy2D.WidthInBytes), 112 },
        { nameof(CudaMemcpy2D), nameof(CudaMemcpy2D.Height), 120 },
    };

    [Theory]
    [MemberData(nameof(Sizes))]
    public void Size_MatchesTheCHeaders(string type, int expected) => Assert.Equal(expected, Marshal.SizeOf(Type(type)));

    [Theory]
    [MemberData(nameof(Offsets))]
    public void FieldOffset_MatchesTheCHeaders(string type, string field, int expected) => Assert.Equal(expected, (int)Marshal.OffsetOf(Type(type), field));

    [Fact]
    public void Enums_HaveTheHeadersValues()
    {
        Assert.Equal(8, (int)CuvidCodec.Hevc);
        Assert.Equal(3, (int)CuvidChromaFormat.Yuv444);
        Assert.Equal(2, (int)CuvidSurfaceFormat.Yuv444);
        Assert.Equal(3, (int)CuvidSurfaceFormat.Yuv444Bit16);
        Assert.Equal(9, (int)CuvidDecodeStatus.ErrorConcealed);
        Assert.Equal(1u, (uint)CuvidSourceDataPacket.EndOfStream);
        Assert.Equal(2, (int)CudaMemoryType.Device);
    }

    private static Type Type(string name) =>
        typeof(CuvidParserParams).Assembly.GetType($"{typeof(CuvidParserParams).Namespace}.{name}", throwOnError: false)
        ?? typeof(CudaMemcpy2D).Assembly.GetType($"{typeof(CudaMemcpy2D).Namespace}.{name}", throwOnError: true)!;
}
