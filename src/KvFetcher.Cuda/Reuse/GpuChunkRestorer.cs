using KvFetcher.Codecs.CacheGen;
using KvFetcher.Codecs.Video;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Cuda.Gpu;
using KvFetcher.Cuda.Nvdec;
using KvFetcher.Engine;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Restoring;

namespace KvFetcher.Cuda.Reuse;

/// <summary>
/// Restores fetched chunks into a <see cref="CudaKvCache"/> using the GPU's own decoders: <c>cachegen</c> chunks are
/// arithmetic-decoded by a CUDA-core kernel (one thread per (layer, K/V) stream) straight into device memory;
/// <c>video</c> chunks (when an <see cref="NvdecPool"/> is given) are decoded by NVDEC into device memory (K and V
/// streams on two sessions of the shared pool at once) and
/// dequantized by a kernel into the wire layout on the device (samples above 8 bits, which NVDEC writes MSB-aligned,
/// are shifted down first), then imported; every other codec is decoded on
/// the CPU and copied up. With <see cref="VerifyFrames"/> each stream's decoded frames are also checked against the
/// checksum its record declares, as the CPU decoder does, so a decoder that returns other values never reaches the cache.
/// </summary>
public sealed class GpuChunkRestorer : IChunkRestorer
{
    private readonly CudaLanguageModel _model;
    private readonly NvdecDevice? _device;
    private readonly NvdecPool? _pool;

    /// <param name="model">The engine whose caches chunks are restored into (its context and kernels are used).</param>
    /// <param name="device">The NVDEC device of the model's GPU; null when NVDEC cannot be used (video is then decoded on the CPU).</param>
    /// <param name="pool">Decode sessions shared by every slot (and every request using this restorer); null with <paramref name="device"/>.</param>
    /// <param name="verifyFrames">Check each stream's decoded frames against its declared checksum (a device-to-host copy and a hash per stream).</param>
    public GpuChunkRestorer(CudaLanguageModel model, NvdecDevice? device, NvdecPool? pool, bool verifyFrames = true)
    {
        ArgumentNullException.ThrowIfNull(model);
        if ((device is null) != (pool is null))
        {
            throw new ArgumentException("NVDEC needs both its device and its pool, or neither.", nameof(pool));
        }

        _model = model;
        _device = device;
        _pool = pool;
        VerifyFrames = verifyFrames;
    }

    public string Name => _pool is null ? "cuda cachegen + cpu" : $"nvdec x{_pool.Sessions} + cuda cachegen + cpu";

    /// <summary>Whether decoded frames are checked against their streams' checksums.</summary>
    public bool VerifyFrames { get; }

    public IRestoreSlot CreateSlot(KvShape shape, DType dtype) => new Slot(this, shape, dtype);

    private sealed unsafe class Slot : IRestoreSlot
    {
        private readonly GpuChunkRestorer _owner;
        private readonly KvShape _shape;
        private readonly DType _dtype;
        private readonly HostChunkRestorer.Slot _host;
        private readonly CudaKernel _kernel;
        private readonly CudaKernel _toLsb;
        private readonly CudaKernel _cachegen;
        private readonly int[] _planeInfo;
        private readonly long[] _status;
        private DeviceBuffer? _payload;
        private DeviceBuffer? _parameters;
        private DeviceBuffer? _planeTable;
        private DeviceBuffer? _statusBuffer;
        private readonly float[] _scales;
        private readonly int[] _offsets;
        private NvdecDeviceBuffer? _framesK;
        private NvdecDeviceBuffer? _framesV;
        private DeviceBuffer? _tables;
        private DeviceBuffer? _kv;
        private CudaStream? _stream;
        private byte[] _hostFrames = [];
        private VideoLayoutKind _uploadedLayout;
        private bool _onDevice;

        public Slot(GpuChunkRestorer owner, KvShape shape, DType dtype)
        {
            _owner = owner;
            _shape = shape;
            _dtype = dtype;
            _host = new HostChunkRestorer.Slot(checked((int)(shape.Elements * dtype.SizeOf())), dtype);
            _kernel = owner._model.Transformer.Module.Get("video_restore");
            _toLsb = owner._model.Transformer.Module.Get("samples_to_lsb");
            _cachegen = owner._model.Transformer.Module.Get("cachegen_decode");
            _planeInfo = new int[5 * shape.Layers * 2];
            _status = new long[shape.Layers * 2];
            _scales = new float[2 * shape.Layers * 2 * shape.Channels];
            _offsets = new int[shape.Tokens + shape.Channels + shape.Layers];
        }

        private int ScaleCount => _shape.Layers * 2 * _shape.Channels;

        public void Decode(ReadOnlyMemory<byte> container, in ChunkExpectation expected, KvVariant variant)
        {
            if (variant.Codec == CodecId.CacheGen)
            {
                DecodeCacheGen(container, expected, variant);
                return;
            }

            if (variant.Codec != CodecId.Video || _owner._pool is null)
            {
                _onDevice = false;
                _host.Decode(container, expected, variant);
                return;
            }

            ChunkHeader header = ChunkContainer.Read(container.Span, expected, out ReadOnlySpan<byte> parameters, out ReadOnlySpan<byte> payload);
            if (header.Codec != CodecId.Video || header.Level != variant.Level)
            {
                throw new InvalidKvDataException($"KV chunk container: holds {header.Codec} level {header.Level}; video level {variant.Level} was fetched.");
            }

            VideoLayoutKind layout = VideoCodec.ReadScales(parameters, _shape, header.Level, _scales.AsSpan(0, ScaleCount), _scales.AsSpan(ScaleCount, ScaleCount));
            (VideoStreamRecord k, VideoStreamRecord v) = VideoChunkStreams.Parse(parameters, payload);
            int payloadStart = ChunkContainer.HeaderSize + parameters.Length;
            long frameBytes = k.Format.OutputBytes;
            EnsureBuffers(frameBytes, layout);

            // K and V on two sessions at once; both write device memory only.
            Task decodeK = _owner._pool!.DecodeToDeviceAsync(container.Slice(payloadStart + k.Offset, k.Length), k.Format, _framesK!);
            Task decodeV = _owner._pool.DecodeToDeviceAsync(container.Slice(payloadStart + v.Offset, v.Length), v.Format, _framesV!);
            Task.WaitAll(decodeK, decodeV);
            if (k.Format.Depth > 8)
            {
                ToLowBits(_framesK!, frameBytes, k.Format.Depth);
                ToLowBits(_framesV!, frameBytes, v.Format.Depth);
                _stream!.Synchronize();
            }

            if (_owner.VerifyFrames)
            {
                Verify(_framesK!, frameBytes, k.Checksum, "K");
                Verify(_framesV!, frameBytes, v.Checksum, "V");
            }

            _tables!.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(_scales.AsSpan()), (long)_offsets.Length * sizeof(int));
            Dequantize(_framesK!, k.Format.SampleBytes, kind: 0);
            Dequantize(_framesV!, v.Format.SampleBytes, kind: 1);
            _stream!.Synchronize();
            _onDevice = true;
        }

        public void Restore(IKvCache cache, int start, int end)
        {
            if (!_onDevice)
            {
                _host.Restore(cache, start, end);
                return;
            }

            if (cache is not CudaKvCache device)
            {
                throw new InvalidOperationException($"NVDEC restores into a {nameof(CudaKvCache)}; this session's cache is a {cache.GetType().Name}.");
            }

            device.Import(start, end, _dtype, _kv!);
        }

        public void Dispose()
        {
            _host.Dispose();
            _framesK?.Dispose();
            _framesV?.Dispose();
            _tables?.Dispose();
            _payload?.Dispose();
            _parameters?.Dispose();
            _planeTable?.Dispose();
            _statusBuffer?.Dispose();
            _kv?.Dispose();
            _stream?.Dispose();
        }

        private void EnsureBuffers(long frameBytes, VideoLayoutKind layout)
        {
            if (_framesK is null || _framesK.Length < frameBytes)
            {
                _framesK?.Dispose();
                _framesV?.Dispose();
                _framesK = new NvdecDeviceBuffer(_owner._device!, frameBytes);
                _framesV = new NvdecDeviceBuffer(_owner._device!, frameBytes);
            }

            CudaContext context = _owner._model.Context;
            _stream ??= context.CreateStream();
            _kv ??= context.Allocate(_shape.Elements * _dtype.SizeOf());
            if (_tables is null || _uploadedLayout != layout)
            {
                _tables ??= context.Allocate(((long)_offsets.Length * sizeof(int)) + ((long)_scales.Length * sizeof(float)));
                Span<int> offsets = _offsets;
                VideoCodec.FrameOffsets(_shape, layout, offsets[.._shape.Tokens], offsets.Slice(_shape.Tokens, _shape.Channels), offsets[(_shape.Tokens + _shape.Channels)..]);
                _tables.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(offsets));
                _uploadedLayout = layout;
            }
        }

        private void Verify(NvdecDeviceBuffer frames, long bytes, ulong declared, string stream)
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

        private void DecodeCacheGen(ReadOnlyMemory<byte> container, in ChunkExpectation expected, KvVariant variant)
        {
            ChunkHeader header = ChunkContainer.Read(container.Span, expected, out ReadOnlySpan<byte> parameters, out ReadOnlySpan<byte> payload);
            if (header.Codec != CodecId.CacheGen || header.Level != variant.Level)
            {
                throw new InvalidKvDataException($"KV chunk container: holds {header.Codec} level {header.Level}; cachegen level {variant.Level} was fetched.");
            }

            // Checked on the host (tables, scales, lengths) so the kernel never loops or reads out of bounds.
            int planes = _shape.Layers * 2;
            Span<int> info = _planeInfo;
            Span<int> tableOffsets = stackalloc int[planes];
            Span<int> streamOffsets = stackalloc int[planes];
            Span<int> streamLengths = stackalloc int[planes];
            Span<int> symbols = stackalloc int[planes];
            Span<int> magnitudes = stackalloc int[planes];
            CacheGenCodec.DescribePlanes(parameters, payload, _shape, header.Level, tableOffsets, streamOffsets, streamLengths, symbols, magnitudes);
            for (int p = 0; p < planes; p++)
            {
                info[(5 * p) + 0] = tableOffsets[p];
                info[(5 * p) + 1] = streamOffsets[p];
                info[(5 * p) + 2] = streamLengths[p];
                info[(5 * p) + 3] = symbols[p];
                info[(5 * p) + 4] = magnitudes[p];
            }

            CudaContext context = _owner._model.Context;
            _stream ??= context.CreateStream();
            _kv ??= context.Allocate(_shape.Elements * _dtype.SizeOf());
            if (_payload is null || _payload.Length < payload.Length)
            {
                _payload?.Dispose();
                _payload = null;
                _payload = context.Allocate(Math.Max(payload.Length, 1) + (1 << 16));
            }

            ReadOnlySpan<byte> scales = parameters[CacheGenCodec.ScalesOffset(_shape.Layers)..];
            if (_parameters is null || _parameters.Length < scales.Length)
            {
                _parameters?.Dispose();
                _parameters = null;
                _parameters = context.Allocate(scales.Length);
            }

            _planeTable ??= context.Allocate((long)_planeInfo.Length * sizeof(int));
            _statusBuffer ??= context.Allocate((long)_status.Length * sizeof(long));
            _payload.CopyFrom(payload);
            _parameters.CopyFrom(scales);
            _planeTable.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(_planeInfo.AsSpan()));

            var arguments = default(KernelArguments);
            arguments.Add(_payload.Pointer);
            arguments.Add(_parameters.Pointer);
            arguments.Add(_planeTable.Pointer);
            arguments.Add(_kv.Pointer);
            arguments.Add((int)_dtype);
            arguments.Add(planes);
            arguments.Add(_shape.Tokens);
            arguments.Add(_shape.Channels);
            arguments.Add(_statusBuffer.Pointer);
            context.MakeCurrent();
            _cachegen.Launch(_stream, ((planes + 31) / 32, 1, 1), 32, 0, ref arguments);
            _stream.Synchronize();
            _statusBuffer.CopyTo(System.Runtime.InteropServices.MemoryMarshal.AsBytes(_status.AsSpan()));
            for (int p = 0; p < planes; p++)
            {
                if (_status[p] != streamLengths[p])
                {
                    string why = _status[p] switch
                    {
                        -1 => "does not start with byte 0",
                        -2 => "holds a code target outside the 16-bit CDF",
                        _ => $"declares {streamLengths[p]} bytes but its symbols take {_status[p]}",
                    };
                    throw new InvalidKvDataException($"cachegen: the stream of layer {p >> 1} {((p & 1) == 0 ? 'K' : 'V')} {why} (CUDA decoder).");
                }
            }

            _onDevice = true;
        }

        private void ToLowBits(NvdecDeviceBuffer frames, long bytes, int depth)
        {
            long samples = bytes / sizeof(ushort);
            var arguments = default(KernelArguments);
            arguments.Add(frames.DeviceAddress);
            arguments.Add((ulong)samples);
            arguments.Add(16 - depth);
            _owner._model.Context.MakeCurrent();
            _toLsb.Launch(_stream!, ((int)Math.Clamp((samples + 255) / 256, 1, 65_535), 1, 1), 256, 0, ref arguments);
        }

        private void Dequantize(NvdecDeviceBuffer frames, int sampleBytes, int kind)
        {
            ulong tables = _tables!.Pointer;
            ulong tokenOffsets = tables;
            ulong channelOffsets = tables + ((ulong)_shape.Tokens * sizeof(int));
            ulong layerOffsets = channelOffsets + ((ulong)_shape.Channels * sizeof(int));
            ulong mins = tables + ((ulong)_offsets.Length * sizeof(int));
            ulong steps = mins + ((ulong)ScaleCount * sizeof(float));
            var arguments = default(KernelArguments);
            arguments.Add(frames.DeviceAddress);
            arguments.Add(sampleBytes);
            arguments.Add(tokenOffsets);
            arguments.Add(channelOffsets);
            arguments.Add(layerOffsets);
            arguments.Add(mins);
            arguments.Add(steps);
            arguments.Add(_kv!.Pointer);
            arguments.Add((int)_dtype);
            arguments.Add(_shape.Layers);
            arguments.Add(kind);
            arguments.Add(_shape.Tokens);
            arguments.Add(_shape.Channels);
            long elements = (long)_shape.Layers * _shape.Tokens * _shape.Channels;
            _owner._model.Context.MakeCurrent();
            _kernel.Launch(_stream!, ((int)Math.Clamp((elements + 255) / 256, 1, 65_535), 1, 1), 256, 0, ref arguments);
        }
    }
}
