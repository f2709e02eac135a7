using System.Numerics.Tensors;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using KvFetcher.Core;
using KvFetcher.Cuda.Native;

namespace KvFetcher.Cuda.Nvdec;

/// <summary>
/// One NVDEC decode session on an <see cref="NvdecDevice"/>'s CUDA context: decodes the <c>video</c> codec's lossless HEVC 4:4:4 streams, one at a time, into host
/// planes (<see cref="Decode"/>, the same bytes as the CPU decoder) or into GPU memory (<see cref="DecodeToDevice"/>).
/// The hardware decoder is created for the first stream and kept while later streams have the same geometry. Not
/// thread-safe: use one per thread (<see cref="NvdecPool"/> runs several).
/// </summary>
/// <remarks>
/// Each stream gets its own cuvid parser fed the whole Annex B stream as one end-of-stream packet; the parser calls
/// back (on this thread) to create the decoder, to decode each picture and to display it. Display maps the decoded
/// surface (pitched, planes Y, U, V one after another, each <c>(height + 1) &amp; ~1</c> rows), copies the three planes
/// packed into the destination on the decoder's CUDA stream, waits for the copy and unmaps the surface.
/// </remarks>
public sealed unsafe partial class NvdecDecoder : IDisposable
{
    private const int MaxDecodeSurfaces = 32;
    private const nuint PreferCuvid = 4;

    private readonly NvdecDevice _device;
    private readonly NvdecDecoderOptions _options;
    private readonly SafeCuvidContextLockHandle _videoLock;
    private readonly CudaStream _stream;
    private GCHandle _self;
    private SafeCuvidDecoderHandle? _decoder;
    private DecoderShape _shape;
    private DeviceBuffer? _scratch;
    private bool _decodeStatusUnsupported;
    private int _busy;

    // The stream being decoded (valid during a Decode call).
    private NvdecStreamFormat _format;
    private ulong _destination;
    private int _framesOut;
    private Exception? _failure;

    /// <summary>Creates a decode session on <paramref name="device"/>.</summary>
    public NvdecDecoder(NvdecDevice device, NvdecDecoderOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        _options = options ?? new NvdecDecoderOptions();
        _options.Validate();
        _device = device;
        device.Context.MakeCurrent();
        Check.Nvcuvid(Interop.Nvcuvid.CtxLockCreate(out _videoLock, device.Context.Handle.DangerousGetHandle()));
        _stream = device.Context.CreateStream();

        // Weak: a decoder nobody disposed can still be collected (its handles then free themselves).
        _self = GCHandle.Alloc(this, GCHandleType.Weak);
    }

    ~NvdecDecoder()
    {
        if (_self.IsAllocated)
        {
            _self.Free();
        }
    }

    /// <summary>Pictures decoded by this session since it was created.</summary>
    public long FramesDecoded { get; private set; }

    /// <summary>How many times this session created a hardware decoder (once per change of geometry).</summary>
    public int DecodersCreated { get; private set; }

    /// <summary>
    /// Decodes <paramref name="stream"/> (Annex B) into <paramref name="planes"/>, laid out as
    /// <see cref="NvdecStreamFormat"/> describes (10- and 12-bit samples as little-endian values, like the CPU decoder).
    /// Throws <see cref="InvalidKvDataException"/> if the stream does not decode to exactly that format.
    /// </summary>
    public void Decode(ReadOnlySpan<byte> stream, NvdecStreamFormat format, Span<byte> planes)
    {
        format.Validate();
        if (planes.Length != format.OutputBytes)
        {
            throw new ArgumentException($"{format} decodes to {format.OutputBytes} bytes of planes, not {planes.Length}.", nameof(planes));
        }

        Enter();
        try
        {
            if (_scratch is null || _scratch.Length < format.OutputBytes)
            {
                _scratch?.Dispose();
                _scratch = null;
                _scratch = _device.Context.Allocate(format.OutputBytes);
            }

            _device.Context.MakeCurrent();
            DecodeCore(stream, format, _scratch.Pointer);
            _scratch.CopyTo(planes);
        }
        finally
        {
            Exit();
        }

        if (format.Depth > 8)
        {
            // NVDEC's 16-bit surfaces hold a 10- or 12-bit value in their high bits.
            Span<ushort> samples = MemoryMarshal.Cast<byte, ushort>(planes);
            TensorPrimitives.ShiftRightLogical(samples, 16 - format.Depth, samples);
        }
    }

    /// <summary>
    /// Decodes <paramref name="stream"/> into <paramref name="destination"/> at byte <paramref name="offset"/>, in GPU
    /// memory: planes packed as <see cref="NvdecStreamFormat"/> describes, but 10- and 12-bit samples left as NVDEC
    /// writes them: 16-bit words holding the value in their high bits (value &lt;&lt; (16 - depth)); a restore kernel
    /// shifts them down. <paramref name="destination"/> is memory of the device's <see cref="NvdecDevice.Context"/>.
    /// The planes are complete when this returns.
    /// </summary>
    public void DecodeToDevice(ReadOnlySpan<byte> stream, NvdecStreamFormat format, DeviceBuffer destination, long offset = 0)
    {
        format.Validate();
        ArgumentNullException.ThrowIfNull(destination);
        if (destination.Context.DeviceOrdinal != _device.Ordinal)
        {
            throw new ArgumentException("The buffer belongs to another device.", nameof(destination));
        }

        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if (offset > destination.Length - format.OutputBytes)
        {
            throw new ArgumentException($"{format} decodes to {format.OutputBytes} bytes, which do not fit at offset {offset} of a {destination.Length}-byte buffer.", nameof(destination));
        }

        Enter();
        try
        {
            _device.Context.MakeCurrent();
            DecodeCore(stream, format, destination.Pointer + (ulong)offset);
        }
        finally
        {
            Exit();
        }
    }

    public void Dispose()
    {
        if (!_self.IsAllocated)
        {
            return;
        }

        _self.Free();
        GC.SuppressFinalize(this);
        _decoder?.Dispose();
        _scratch?.Dispose();
        _stream.Dispose();
        _videoLock.Dispose();
    }

    private void Enter()
    {
        ObjectDisposedException.ThrowIf(!_self.IsAllocated, this);
        if (Interlocked.Exchange(ref _busy, 1) != 0)
        {
            throw new InvalidOperationException("An NvdecDecoder decodes one stream at a time; use one per thread.");
        }
    }

    private void Exit() => Volatile.Write(ref _busy, 0);

    /// <summary>Parses and decodes the whole stream; the device's context is current.</summary>
    private void DecodeCore(ReadOnlySpan<byte> stream, NvdecStreamFormat format, ulong destination)
    {
        if (stream.IsEmpty)
        {
            throw new InvalidKvDataException($"nvdec: the {format} HEVC stream is empty.");
        }

        _format = format;
        _destination = destination;
        _framesOut = 0;
        _failure = null;
        var parameters = new CuvidParserParams
        {
            CodecType = CuvidCodec.Hevc,
            MaxNumDecodeSurfaces = (uint)Math.Max(1, _shape.Surfaces),
            MaxDisplayDelay = (uint)_options.DisplayDelay,
            UserData = GCHandle.ToIntPtr(_self),
            SequenceCallback = &OnSequence,
            DecodePicture = &OnDecodePicture,
            DisplayPicture = &OnDisplayPicture,
        };
        Check.Nvcuvid(Interop.Nvcuvid.CreateVideoParser(out SafeCuvidParserHandle parser, &parameters));
        using (parser)
        {
            fixed (byte* data = stream)
            {
                var packet = new CuvidSourceDataPacket { Flags = CuvidSourceDataPacket.EndOfStream, PayloadSize = (nuint)stream.Length, Payload = data };
                CudaResult status = Interop.Nvcuvid.ParseVideoData(parser, &packet);
                if (_failure is not null)
                {
                    ExceptionDispatchInfo.Throw(_failure);
                }

                if (status != CudaResult.Success)
                {
                    throw new InvalidKvDataException($"nvdec: cuvidParseVideoData refused the {format} HEVC stream ({stream.Length} bytes): {Check.CudaName(status)} ({(int)status}).");
                }
            }
        }

        if (_framesOut != format.Frames)
        {
            throw new InvalidKvDataException($"nvdec: the HEVC stream ({stream.Length} bytes) holds {_framesOut} frames; the format declares {format.Frames}.");
        }
    }

    /// <summary>The geometry a hardware decoder was created for; a stream with the same shape reuses it.</summary>
    private readonly record struct DecoderShape(uint CodedWidth, uint CodedHeight, int Left, int Top, int Width, int Height, int Depth, int Surfaces);
}
