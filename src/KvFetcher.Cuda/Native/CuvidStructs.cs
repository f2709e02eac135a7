using System.Runtime.InteropServices;

namespace KvFetcher.Cuda.Native;

// Blittable mirrors of the NVDECODE API structures (cuviddec.h / nvcuvid.h, NVDECODE API 11.1, as shipped in Debian's
// libffmpeg-nvenc-dev 11.1.5.2 headers; the driver keeps this ABI in later releases). Sizes and offsets are asserted in
// tests/KvFetcher.Cuda.Tests/Nvdec/CuvidAbiTests.cs against values printed by a C program compiled with those headers.
// Only the fields this decoder reads or writes have names; the rest are reserved padding that must stay zero.

/// <summary>cudaVideoCodec values this decoder uses.</summary>
internal enum CuvidCodec
{
    Hevc = 8,
}

/// <summary>cudaVideoChromaFormat.</summary>
internal enum CuvidChromaFormat
{
    Monochrome = 0,
    Yuv420 = 1,
    Yuv422 = 2,
    Yuv444 = 3,
}

/// <summary>cudaVideoSurfaceFormat.</summary>
internal enum CuvidSurfaceFormat
{
    Nv12 = 0,
    P016 = 1,
    Yuv444 = 2,
    Yuv444Bit16 = 3,
}

/// <summary>cuvidDecodeStatus.</summary>
internal enum CuvidDecodeStatus
{
    Invalid = 0,
    InProgress = 1,
    Success = 2,
    Error = 8,
    ErrorConcealed = 9,
}

/// <summary>CUVIDDECODECAPS (88 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 88)]
internal struct CuvidDecodeCaps
{
    [FieldOffset(0)] public CuvidCodec CodecType;
    [FieldOffset(4)] public CuvidChromaFormat ChromaFormat;
    [FieldOffset(8)] public uint BitDepthMinus8;
    [FieldOffset(24)] public byte IsSupported;
    [FieldOffset(25)] public byte NumNvdecs;
    [FieldOffset(26)] public ushort OutputFormatMask;
    [FieldOffset(28)] public uint MaxWidth;
    [FieldOffset(32)] public uint MaxHeight;
    [FieldOffset(36)] public uint MaxMacroblockCount;
    [FieldOffset(40)] public ushort MinWidth;
    [FieldOffset(42)] public ushort MinHeight;
}

/// <summary>The four shorts of a CUVIDDECODECREATEINFO display or target rectangle.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct CuvidShortRect
{
    public short Left;
    public short Top;
    public short Right;
    public short Bottom;
}

/// <summary>CUVIDDECODECREATEINFO (176 bytes; <c>unsigned long</c> fields are 8 bytes on LP64 Linux).</summary>
[StructLayout(LayoutKind.Explicit, Size = 176)]
internal struct CuvidDecodeCreateInfo
{
    [FieldOffset(0)] public nuint Width;
    [FieldOffset(8)] public nuint Height;
    [FieldOffset(16)] public nuint NumDecodeSurfaces;
    [FieldOffset(24)] public CuvidCodec CodecType;
    [FieldOffset(28)] public CuvidChromaFormat ChromaFormat;
    [FieldOffset(32)] public nuint CreationFlags;
    [FieldOffset(40)] public nuint BitDepthMinus8;
    [FieldOffset(48)] public nuint IntraDecodeOnly;
    [FieldOffset(56)] public nuint MaxWidth;
    [FieldOffset(64)] public nuint MaxHeight;
    [FieldOffset(80)] public CuvidShortRect DisplayArea;
    [FieldOffset(88)] public CuvidSurfaceFormat OutputFormat;
    [FieldOffset(92)] public int DeinterlaceMode;
    [FieldOffset(96)] public nuint TargetWidth;
    [FieldOffset(104)] public nuint TargetHeight;
    [FieldOffset(112)] public nuint NumOutputSurfaces;
    [FieldOffset(120)] public IntPtr VideoLock;
    [FieldOffset(128)] public CuvidShortRect TargetRect;
}

/// <summary>CUVIDPROCPARAMS (264 bytes): how cuvidMapVideoFrame64 post-processes and on which stream.</summary>
[StructLayout(LayoutKind.Explicit, Size = 264)]
internal struct CuvidProcParams
{
    [FieldOffset(0)] public int ProgressiveFrame;
    [FieldOffset(4)] public int SecondField;
    [FieldOffset(8)] public int TopFieldFirst;
    [FieldOffset(12)] public int UnpairedField;
    [FieldOffset(56)] public IntPtr OutputStream;
}

/// <summary>CUVIDEOFORMAT (64 bytes): the sequence the parser found; handed to the sequence callback.</summary>
[StructLayout(LayoutKind.Explicit, Size = 64)]
internal struct CuvidVideoFormat
{
    [FieldOffset(0)] public CuvidCodec Codec;
    [FieldOffset(12)] public byte ProgressiveSequence;
    [FieldOffset(13)] public byte BitDepthLumaMinus8;
    [FieldOffset(14)] public byte BitDepthChromaMinus8;
    [FieldOffset(15)] public byte MinNumDecodeSurfaces;
    [FieldOffset(16)] public uint CodedWidth;
    [FieldOffset(20)] public uint CodedHeight;
    [FieldOffset(24)] public int DisplayLeft;
    [FieldOffset(28)] public int DisplayTop;
    [FieldOffset(32)] public int DisplayRight;
    [FieldOffset(36)] public int DisplayBottom;
    [FieldOffset(40)] public CuvidChromaFormat ChromaFormat;
}

/// <summary>CUVIDSOURCEDATAPACKET (32 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 32)]
internal unsafe struct CuvidSourceDataPacket
{
    /// <summary>CUVID_PKT_ENDOFSTREAM: the last packet of a stream; the parser flushes its display queue.</summary>
    public const nuint EndOfStream = 0x01;

    [FieldOffset(0)] public nuint Flags;
    [FieldOffset(8)] public nuint PayloadSize;
    [FieldOffset(16)] public byte* Payload;
    [FieldOffset(24)] public long Timestamp;
}

/// <summary>CUVIDPARSERDISPINFO (24 bytes): a picture ready for display.</summary>
[StructLayout(LayoutKind.Explicit, Size = 24)]
internal struct CuvidParserDisplayInfo
{
    [FieldOffset(0)] public int PictureIndex;
    [FieldOffset(4)] public int ProgressiveFrame;
    [FieldOffset(8)] public int TopFieldFirst;
    [FieldOffset(12)] public int RepeatFirstField;
    [FieldOffset(16)] public long Timestamp;
}

/// <summary>CUVIDPARSERPARAMS (136 bytes): the parser's codec, queue depths and callbacks (cdecl function pointers).</summary>
[StructLayout(LayoutKind.Explicit, Size = 136)]
internal unsafe struct CuvidParserParams
{
    [FieldOffset(0)] public CuvidCodec CodecType;
    [FieldOffset(4)] public uint MaxNumDecodeSurfaces;
    [FieldOffset(8)] public uint ClockRate;
    [FieldOffset(12)] public uint ErrorThreshold;
    [FieldOffset(16)] public uint MaxDisplayDelay;
    [FieldOffset(40)] public IntPtr UserData;
    [FieldOffset(48)] public delegate* unmanaged[Cdecl]<IntPtr, CuvidVideoFormat*, int> SequenceCallback;
    [FieldOffset(56)] public delegate* unmanaged[Cdecl]<IntPtr, IntPtr, int> DecodePicture;
    [FieldOffset(64)] public delegate* unmanaged[Cdecl]<IntPtr, CuvidParserDisplayInfo*, int> DisplayPicture;
}

/// <summary>CUVIDGETDECODESTATUS (192 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 192)]
internal struct CuvidGetDecodeStatus
{
    [FieldOffset(0)] public CuvidDecodeStatus DecodeStatus;
}
