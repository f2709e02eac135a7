using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using KvFetcher.Core;
using KvFetcher.Cuda.Native;

namespace KvFetcher.Cuda.Nvdec;

/// <summary>The parser's callbacks: entered from native code, so no exception may leave them; the first is kept and rethrown.</summary>
public sealed unsafe partial class NvdecDecoder
{
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnSequence(IntPtr user, CuvidVideoFormat* format)
    {
        var self = (NvdecDecoder)GCHandle.FromIntPtr(user).Target!;
        if (self._failure is not null)
        {
            return 0;
        }

        try
        {
            return self.CreateDecoder(in *format);
        }
        catch (Exception ex)
        {
            self._failure = ex;
            return 0;
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnDecodePicture(IntPtr user, IntPtr pictureParams)
    {
        var self = (NvdecDecoder)GCHandle.FromIntPtr(user).Target!;
        if (self._failure is not null)
        {
            return 0;
        }

        try
        {
            if (self._decoder is null)
            {
                throw new InvalidKvDataException("nvdec: the HEVC stream has a picture before its sequence parameters.");
            }

            Check.Nvcuvid(Interop.Nvcuvid.DecodePicture(self._decoder.DangerousGetHandle(), pictureParams));
            return 1;
        }
        catch (Exception ex)
        {
            self._failure = ex;
            return 0;
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnDisplayPicture(IntPtr user, CuvidParserDisplayInfo* info)
    {
        var self = (NvdecDecoder)GCHandle.FromIntPtr(user).Target!;
        if (self._failure is not null)
        {
            return 0;
        }

        if (info is null)
        {
            return 1;
        }

        try
        {
            self.CopyPicture(in *info);
            return 1;
        }
        catch (Exception ex)
        {
            self._failure = ex;
            return 0;
        }
    }

    /// <summary>Checks the sequence against the declared format and creates (or keeps) the hardware decoder; returns the decode surfaces.</summary>
    private int CreateDecoder(in CuvidVideoFormat sequence)
    {
        NvdecStreamFormat format = _format;
        int width = sequence.DisplayRight - sequence.DisplayLeft;
        int height = sequence.DisplayBottom - sequence.DisplayTop;
        if (sequence.Codec != CuvidCodec.Hevc || sequence.ChromaFormat != CuvidChromaFormat.Yuv444)
        {
            throw new InvalidKvDataException($"nvdec: the stream is codec {sequence.Codec} chroma format {sequence.ChromaFormat}; expected HEVC 4:4:4.");
        }

        if (sequence.BitDepthLumaMinus8 + 8 != format.Depth || sequence.BitDepthChromaMinus8 + 8 != format.Depth)
        {
            throw new InvalidKvDataException(
                $"nvdec: the stream's samples are {sequence.BitDepthLumaMinus8 + 8}-bit luma and {sequence.BitDepthChromaMinus8 + 8}-bit chroma; the format declares {format.Depth}.");
        }

        if (width != format.Width || height != format.Height)
        {
            throw new InvalidKvDataException($"nvdec: the stream's frames are {width}x{height}; the format declares {format.Width}x{format.Height}.");
        }

        int surfaces = Math.Min(MaxDecodeSurfaces, sequence.MinNumDecodeSurfaces + _options.DisplayDelay + _options.ExtraSurfaces);
        var shape = new DecoderShape(sequence.CodedWidth, sequence.CodedHeight, sequence.DisplayLeft, sequence.DisplayTop, width, height, format.Depth, surfaces);
        if (_decoder is not null && shape == _shape)
        {
            return surfaces;
        }

        _decoder?.Dispose();
        _decoder = null;
        var info = new CuvidDecodeCreateInfo
        {
            Width = sequence.CodedWidth,
            Height = sequence.CodedHeight,
            NumDecodeSurfaces = (nuint)surfaces,
            CodecType = CuvidCodec.Hevc,
            ChromaFormat = CuvidChromaFormat.Yuv444,
            CreationFlags = PreferCuvid,
            BitDepthMinus8 = (nuint)(format.Depth - 8),
            MaxWidth = sequence.CodedWidth,
            MaxHeight = sequence.CodedHeight,
            DisplayArea = new CuvidShortRect { Left = (short)sequence.DisplayLeft, Top = (short)sequence.DisplayTop, Right = (short)sequence.DisplayRight, Bottom = (short)sequence.DisplayBottom },
            OutputFormat = format.Depth > 8 ? CuvidSurfaceFormat.Yuv444Bit16 : CuvidSurfaceFormat.Yuv444,
            TargetWidth = (nuint)width,
            TargetHeight = (nuint)height,
            NumOutputSurfaces = 2,
            VideoLock = _videoLock.DangerousGetHandle(),
        };
        _decoder = SafeCuvidDecoderHandle.Create(_device.Context.Handle, ref info);
        _shape = shape;
        DecodersCreated++;
        return surfaces;
    }

    /// <summary>Maps a decoded picture, copies its three planes packed into the destination, waits, unmaps.</summary>
    private void CopyPicture(in CuvidParserDisplayInfo info)
    {
        NvdecStreamFormat format = _format;
        if (_framesOut >= format.Frames)
        {
            throw new InvalidKvDataException($"nvdec: the HEVC stream holds more than the {format.Frames} frames the format declares.");
        }

        IntPtr decoder = _decoder!.DangerousGetHandle();
        IntPtr stream = _stream.Handle;
        var process = new CuvidProcParams { ProgressiveFrame = info.ProgressiveFrame, TopFieldFirst = info.TopFieldFirst, OutputStream = stream };
        ulong surface;
        uint pitch;
        Check.Nvcuvid(Interop.Nvcuvid.MapVideoFrame64(decoder, info.PictureIndex, &surface, &pitch, &process));
        bool copied = false;
        try
        {
            CheckDecodeStatus(decoder, info.PictureIndex);
            nuint rowBytes = (nuint)(format.Width * format.SampleBytes);
            nuint planeBytes = rowBytes * (nuint)format.Height;
            nuint planeRows = (nuint)((format.Height + 1) & ~1);
            var copy = new CudaMemcpy2D
            {
                SourceMemoryType = CudaMemoryType.Device,
                SourcePitch = pitch,
                DestinationMemoryType = CudaMemoryType.Device,
                DestinationPitch = rowBytes,
                WidthInBytes = rowBytes,
            };
            ulong frame = _destination + ((ulong)_framesOut * 3 * planeBytes);
            if (planeRows == (nuint)format.Height)
            {
                // The planes follow each other without padding rows: one copy of 3 x height rows.
                copy.SourceDevice = surface;
                copy.DestinationDevice = frame;
                copy.Height = 3 * planeRows;
                Check.Cuda(Interop.Cuda.cuMemcpy2DAsync(&copy, stream));
            }
            else
            {
                for (int p = 0; p < 3; p++)
                {
                    copy.SourceDevice = surface + ((ulong)p * pitch * planeRows);
                    copy.DestinationDevice = frame + ((ulong)p * planeBytes);
                    copy.Height = (nuint)format.Height;
                    Check.Cuda(Interop.Cuda.cuMemcpy2DAsync(&copy, stream));
                }
            }

            Check.Cuda(Interop.Cuda.cuStreamSynchronize(stream));
            copied = true;
        }
        finally
        {
            // A failure inside the copy is the one to report; the unmap's status only matters after a good copy.
            CudaResult unmapped = Interop.Nvcuvid.UnmapVideoFrame64(decoder, surface);
            if (copied)
            {
                Check.Nvcuvid(unmapped, "cuvidUnmapVideoFrame64");
            }
        }

        _framesOut++;
        FramesDecoded++;
    }

    /// <summary>Refuses a picture NVDEC reports as decoded with errors (it would otherwise conceal them silently).</summary>
    private void CheckDecodeStatus(IntPtr decoder, int pictureIndex)
    {
        if (_decodeStatusUnsupported)
        {
            return;
        }

        var status = default(CuvidGetDecodeStatus);
        CudaResult result = Interop.Nvcuvid.GetDecodeStatus(decoder, pictureIndex, &status);
        if (result == CudaResult.NotSupported)
        {
            _decodeStatusUnsupported = true;
            return;
        }

        Check.Nvcuvid(result, "cuvidGetDecodeStatus");
        if (status.DecodeStatus is CuvidDecodeStatus.Error or CuvidDecodeStatus.ErrorConcealed)
        {
            throw new InvalidKvDataException($"nvdec: frame {_framesOut} of the HEVC stream decoded with errors ({status.DecodeStatus}).");
        }
    }
}
