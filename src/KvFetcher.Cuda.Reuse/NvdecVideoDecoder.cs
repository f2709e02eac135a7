using System.Runtime.InteropServices;
using KvFetcher.Core.Containers;
using KvFetcher.Codecs.Video;
using KvFetcher.Core;
using KvFetcher.Cuda.Nvdec;
using KvFetcher.Engine;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Restoring;

namespace KvFetcher.Cuda.Reuse;

/// <summary>
/// Decodes <c>video</c> chunks on NVDEC into device memory (the K and V streams on two sessions of the shared pool at
/// once) and dequantizes them with a kernel into the slot's device KV (samples above 8 bits, which NVDEC writes
/// MSB-aligned, are shifted down first). The chunk is read with the codec's own <see cref="VideoChunkFormat"/>, so it
/// accepts and refuses what the CPU decoder does. With verification on, each stream's decoded frames are checked
/// against the checksum its record declares, as the CPU decoder does, so a decoder that returns other values never
/// reaches the cache.
/// </summary>
internal sealed class NvdecVideoDecoder : IRestoreSlot
{
    private readonly DeviceChunk _chunk;
    private readonly NvdecPool _pool;
    private readonly bool _verifyFrames;
    private readonly float[] _scales;
    private readonly int[] _offsets;
    private DeviceBuffer? _framesK;
    private DeviceBuffer? _framesV;
    private DeviceBuffer? _tables;
    private byte[] _hostFrames = [];
    private VideoLayoutKind? _uploadedLayout;

    public NvdecVideoDecoder(DeviceChunk chunk, NvdecPool pool, bool verifyFrames)
    {
        _chunk = chunk;
        _pool = pool;
        _verifyFrames = verifyFrames;
        KvShape shape = chunk.Shape;
        _scales = new float[2 * ScaleCount];
        _offsets = new int[shape.Tokens + shape.Channels + shape.Layers];
    }

    private int ScaleCount => _chunk.Shape.Layers * 2 * _chunk.Shape.Channels;

    public void Decode(ReadOnlyMemory<byte> container, in ChunkExpectation expected, KvVariant variant)
    {
        ChunkHeader header = ChunkContainer.Read(container.Span, expected, out ReadOnlySpan<byte> parameters, out ReadOnlySpan<byte> payload);
        if (header.Codec != CodecId.Video || header.Level != variant.Level)
        {
            throw new InvalidKvDataException($"KV chunk container: holds {header.Codec} level {header.Level}; video level {variant.Level} was fetched.");
        }

        KvShape shape = _chunk.Shape;
        VideoChunkHeader video = VideoChunkFormat.ReadParameters(parameters, shape, header.Level, _scales.AsSpan(0, ScaleCount), _scales.AsSpan(ScaleCount, ScaleCount));
        (VideoStreamRecord k, VideoStreamRecord v) = VideoChunkFormat.ReadStreams(payload);
        NvdecStreamFormat format = NvdecVideoStreams.FormatOf(video);
        int payloadStart = ChunkContainer.HeaderSize + parameters.Length;
        long frameBytes = format.OutputBytes;
        EnsureBuffers(frameBytes, video.Layout);

        // K and V on two sessions at once; both write device memory only.
        Task decodeK = _pool.DecodeToDeviceAsync(container.Slice(payloadStart + k.Offset, k.Length), format, _framesK!);
        Task decodeV = _pool.DecodeToDeviceAsync(container.Slice(payloadStart + v.Offset, v.Length), format, _framesV!);
        Task.WaitAll(decodeK, decodeV);
        CudaRestoreKernels kernels = _chunk.Model.RestoreKernels;
        CudaStream stream = _chunk.Stream;
        if (format.Depth > 8)
        {
            kernels.SamplesToLowBits(stream, _framesK!, frameBytes, format.Depth);
            kernels.SamplesToLowBits(stream, _framesV!, frameBytes, format.Depth);
            stream.Synchronize();
        }

        if (_verifyFrames)
        {
            Verify(_framesK!, frameBytes, k.Checksum, "K");
            Verify(_framesV!, frameBytes, v.Checksum, "V");
        }

        _tables!.CopyFrom(MemoryMarshal.AsBytes(_scales.AsSpan()), (long)_offsets.Length * sizeof(int));
        kernels.DequantizeVideo(stream, _framesK!, format.SampleBytes, _tables, shape.Layers, shape.Tokens, shape.Channels, kind: 0, _chunk.Kv, _chunk.DType);
        kernels.DequantizeVideo(stream, _framesV!, format.SampleBytes, _tables, shape.Layers, shape.Tokens, shape.Channels, kind: 1, _chunk.Kv, _chunk.DType);
        stream.Synchronize();
    }

    public void Restore(IKvCache cache, int start, int end) => _chunk.RestoreInto(cache, start, end);

    public void Dispose()
    {
        _framesK?.Dispose();
        _framesV?.Dispose();
        _tables?.Dispose();
    }

    private void EnsureBuffers(long frameBytes, VideoLayoutKind layout)
    {
        CudaContext context = _chunk.Context;
        if (_framesK is null || _framesK.Length < frameBytes)
        {
            _framesK?.Dispose();
            _framesV?.Dispose();
            _framesK = null;
            _framesV = null;
            _framesK = context.Allocate(frameBytes);
            _framesV = context.Allocate(frameBytes);
        }

        if (_tables is null || _uploadedLayout != layout)
        {
            KvShape shape = _chunk.Shape;
            _tables ??= context.Allocate(((long)_offsets.Length * sizeof(int)) + ((long)_scales.Length * sizeof(float)));
            Span<int> offsets = _offsets;
            VideoCodec.FrameOffsets(shape, layout, offsets[..shape.Tokens], offsets.Slice(shape.Tokens, shape.Channels), offsets[(shape.Tokens + shape.Channels)..]);
            _tables.CopyFrom(MemoryMarshal.AsBytes(offsets));
            _uploadedLayout = layout;
        }
    }

    private void Verify(DeviceBuffer frames, long bytes, ulong declared, string stream)
    {
        if (_hostFrames.Length < bytes)
        {
            _hostFrames = GC.AllocateUninitializedArray<byte>(checked((int)bytes), pinned: true);
        }

        Span<byte> host = _hostFrames.AsSpan(0, (int)bytes);
        frames.CopyTo(host);
        ulong actual = VideoCodec.FramesChecksum(host);
        if (actual != declared)
        {
            throw new InvalidKvDataException($"video: NVDEC decoded the {stream} stream to frames with checksum {actual:x16}; the record declares {declared:x16}.");
        }
    }
}
