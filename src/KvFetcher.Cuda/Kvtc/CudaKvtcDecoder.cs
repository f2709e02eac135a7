using System.Runtime.InteropServices;
using KvFetcher.Core;
using KvFetcher.Cuda.Gpu;

namespace KvFetcher.Cuda.Kvtc;

/// <summary>
/// Decodes <c>kvtc</c> chunks on the GPU for one restore slot, on its stream: the payload goes up once, the exact
/// tokens are copied as stored, every rANS segment is decoded by a thread of its own into quantized coefficients
/// (fp32), each block's coefficients are multiplied by its step-scaled synthesis matrix on the tensor cores (cuBLAS,
/// TF32: fp32 operands with 10 mantissa bits in the products, fp32 accumulation; no fp16 range limits), and the mean, the keys' rotary embedding and the conversion to the KV type are
/// applied on the way into the destination. Scratch buffers grow to the largest chunk seen and are kept.
/// </summary>
public sealed class CudaKvtcDecoder : IDisposable
{
    /// <summary>Bytes of the slot tables in <see cref="DecodeTablesBytes"/>: 7 bit widths x 4,096 slot symbols.</summary>
    public const int SlotTableBytes = 7 * 4096;

    /// <summary>Bytes of a chunk's decode tables: the slot symbols, then 7 x 256 symbol entries (frequency &lt;&lt; 16 | cumulative start).</summary>
    public const int DecodeTablesBytes = SlotTableBytes + (7 * 256 * sizeof(uint));

    /// <summary>Ints per segment (the codec's <c>KvtcChunkLayout.SegmentFields</c>).</summary>
    public const int SegmentFields = 9;

    private readonly CudaKvtcKernels _kernels;
    private readonly CudaStream _stream;
    private readonly Blas _blas;
    private DeviceBuffer? _payload;
    private DeviceBuffer? _decodeTables;
    private DeviceBuffer? _segments;
    private DeviceBuffer? _status;
    private DeviceBuffer? _coefficients;
    private DeviceBuffer? _products;

    /// <param name="kernels">The context's kvtc kernels.</param>
    /// <param name="stream">The slot's stream: every copy, kernel and product of a chunk is queued on it.</param>
    public CudaKvtcDecoder(CudaKvtcKernels kernels, CudaStream stream)
    {
        ArgumentNullException.ThrowIfNull(kernels);
        ArgumentNullException.ThrowIfNull(stream);
        _kernels = kernels;
        _stream = stream;
        _blas = new Blas(kernels.Context, stream, DType.Float32, CudaMatmulPrecision.TensorFloat32);
    }

    /// <summary>
    /// Decodes one chunk into <paramref name="destination"/> ([layer][kind][token][channel] of <paramref name="dtype"/>)
    /// and waits for it; <paramref name="status"/> gets each segment's kernel status (0: decoded and checked; see
    /// Kvtc.cu). The caller has checked the layout: <paramref name="segments"/> (<see cref="SegmentFields"/> ints each)
    /// lie within <paramref name="payload"/>, tile the chunk's symbols and index escapes that exist.
    /// </summary>
    /// <remarks>
    /// <paramref name="tokenStart"/> is the chunk's first token position (keys are turned at tokenStart + exactHead + t);
    /// <paramref name="escapeOffset"/> where the i16 escapes start in the payload; <paramref name="decodeTables"/>
    /// <see cref="DecodeTablesBytes"/> bytes as <see cref="DecodeTablesBytes"/> describes.
    /// </remarks>
    public void Decode(CudaKvtcTables tables, ReadOnlySpan<byte> payload, ReadOnlySpan<byte> decodeTables, ReadOnlySpan<int> segments, int segmentCount,
        int escapeOffset, int tokens, int exactHead, int exactTail, long tokenStart, DeviceBuffer destination, DType dtype, Span<int> status)
    {
        ArgumentNullException.ThrowIfNull(tables);
        ArgumentNullException.ThrowIfNull(destination);
        ArgumentOutOfRangeException.ThrowIfNegative(exactHead);
        ArgumentOutOfRangeException.ThrowIfNegative(exactTail);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(exactHead + exactTail, tokens);
        ArgumentOutOfRangeException.ThrowIfNotEqual(decodeTables.Length, DecodeTablesBytes, nameof(decodeTables));
        ArgumentOutOfRangeException.ThrowIfLessThan(segments.Length, segmentCount * SegmentFields, nameof(segments));
        ArgumentOutOfRangeException.ThrowIfLessThan(status.Length, segmentCount, nameof(status));
        int planes = tables.Layers * 2;
        int rowBytes = tables.Channels * dtype.SizeOf();
        long kvBytes = (long)planes * tokens * rowBytes;
        ArgumentOutOfRangeException.ThrowIfLessThan(destination.Length, kvBytes, nameof(destination));
        int coded = tokens - exactHead - exactTail;

        Grow(ref _payload, payload.Length + 16);
        CudaKvtcKernels.Upload(_stream, _payload!, payload);
        if (exactHead + exactTail > 0)
        {
            _kernels.CopyExact(_stream, _payload!, destination, planes, tokens, exactHead, exactTail, rowBytes);
        }

        if (coded > 0)
        {
            long values = (long)coded * tables.TotalChannels;
            Grow(ref _coefficients, values * sizeof(float));
            Grow(ref _products, values * sizeof(float));
            CudaKvtcKernels.Clear(_stream, _coefficients!, values * sizeof(float));
            if (segmentCount > 0)
            {
                Grow(ref _decodeTables, DecodeTablesBytes);
                Grow(ref _segments, (long)segmentCount * SegmentFields * sizeof(int));
                Grow(ref _status, (long)segmentCount * sizeof(int));
                CudaKvtcKernels.Upload(_stream, _decodeTables!, decodeTables);
                CudaKvtcKernels.Upload(_stream, _segments!, MemoryMarshal.AsBytes(segments[..(segmentCount * SegmentFields)]));
                _kernels.DecodeSegments(_stream, _payload!, _decodeTables!, _segments!, segmentCount, tables, coded, escapeOffset, _coefficients!, _status!);
            }

            InverseTransform(tables, coded);
            _kernels.Finish(_stream, _products!, tables, destination, dtype, tokens, exactHead, coded, tokenStart + exactHead);
        }

        _stream.Synchronize();
        if (segmentCount > 0 && coded > 0)
        {
            _status!.CopyTo(MemoryMarshal.AsBytes(status[..segmentCount]));
        }
        else
        {
            status[..segmentCount].Clear();
        }
    }

    public void Dispose()
    {
        _blas.Dispose();
        _payload?.Dispose();
        _decodeTables?.Dispose();
        _segments?.Dispose();
        _status?.Dispose();
        _coefficients?.Dispose();
        _products?.Dispose();
    }

    /// <summary>
    /// Per block, products[coded x d] = coefficients[coded x d] · scaledInverse[d x d] (row-major; column-major as
    /// cuBLAS sees it: productsᵀ = scaledInverseᵀ · coefficientsᵀ): one batched product for the blocks of full groups,
    /// one for the last group's two blocks when the layers do not divide.
    /// </summary>
    private void InverseTransform(CudaKvtcTables tables, int coded)
    {
        int block = 0;
        while (block < tables.Blocks)
        {
            int d = tables.BlockChannels(block);
            int batch = 1;
            while (block + batch < tables.Blocks && tables.BlockChannels(block + batch) == d)
            {
                batch++;
            }

            long matrixStart = 0;
            for (int b = 0; b < block; b++)
            {
                matrixStart += (long)tables.BlockChannels(b) * tables.BlockChannels(b);
            }

            long channelStart = tables.ChannelStart(block);
            _blas.StridedBatched(
                tables.ScaledInverse.Pointer + (ulong)(matrixStart * sizeof(float)),
                (long)d * d,
                _coefficients!.Pointer + (ulong)(channelStart * coded * sizeof(float)),
                (long)coded * d,
                _products!.Pointer + (ulong)(channelStart * coded * sizeof(float)),
                (long)coded * d,
                d,
                coded,
                d,
                batch);
            block += batch;
        }
    }

    private void Grow(ref DeviceBuffer? buffer, long bytes)
    {
        if (buffer is null || buffer.Length < bytes)
        {
            buffer?.Dispose();
            buffer = null;
            buffer = _kernels.Context.Allocate(Math.Max(bytes, 16));
        }
    }
}
