using System.Runtime.InteropServices;

namespace KvFetcher.Cuda.Kvtc;

/// <summary>
/// What the <c>kvtc</c> kernels need of one transform at one level, as the host lays it out (the codec's
/// <c>KvtcTransform</c>; this project knows nothing of its file). Blocks are the transform's (K and V of each group of
/// <see cref="GroupLayers"/> layers, block = group * 2 + kind).
/// </summary>
public sealed record CudaKvtcTableSource
{
    public required int Layers { get; init; }

    /// <summary>Channels per plane (kvHeads * headDim).</summary>
    public required int Channels { get; init; }

    public required int HeadDim { get; init; }

    public required int GroupLayers { get; init; }

    /// <summary>Key pairing: 0 keys coded as stored, 1 half-split pairs, 2 interleaved pairs.</summary>
    public required int Pairing { get; init; }

    /// <summary>Each key pair's inverse frequency (headDim / 2 values; empty for pairing 0).</summary>
    public required float[] InverseFrequencies { get; init; }

    /// <summary>Where each block's channels start among all blocks' (blocks + 1 values, the last the total).</summary>
    public required int[] ChannelStarts { get; init; }

    /// <summary>Every block's channel means, blocks in order.</summary>
    public required float[] Means { get; init; }

    /// <summary>Per bit width b = 0..7 and block: how many of the block's components have that width (index b * blocks + block).</summary>
    public required int[] WidthCounts { get; init; }

    /// <summary>Where those components' indices start in <see cref="Components"/> (same index).</summary>
    public required int[] WidthOffsets { get; init; }

    /// <summary>The component indices of every (width, block), each list ascending.</summary>
    public required int[] Components { get; init; }

    /// <summary>
    /// Every block's synthesis matrix with each row k scaled by component k's quantization step (zero rows for dropped
    /// components), row-major [component][channel]; blocks in order, block b's at <c>sum over earlier blocks of d * d</c>.
    /// </summary>
    public required float[] ScaledInverse { get; init; }
}

/// <summary>One transform's tables at one level in device memory (uploaded once; see <see cref="CudaKvtcKernels.Tables"/>).</summary>
public sealed class CudaKvtcTables : IDisposable
{
    private readonly List<DeviceBuffer> _buffers = [];
    private readonly int[] _channelStarts;

    /// <summary>Uploads <paramref name="source"/> to <paramref name="context"/>'s device after checking that its arrays fit together.</summary>
    public CudaKvtcTables(CudaContext context, CudaKvtcTableSource source)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(source);
        int blocks = source.ChannelStarts.Length - 1;
        int groups = (source.Layers + source.GroupLayers - 1) / source.GroupLayers;
        if (blocks != groups * 2 || source.ChannelStarts[^1] != source.Layers * 2 * source.Channels || source.Means.Length != source.ChannelStarts[^1]
            || source.WidthCounts.Length != 8 * blocks || source.WidthOffsets.Length != 8 * blocks
            || (source.Pairing != 0 && source.InverseFrequencies.Length * 2 != source.HeadDim))
        {
            throw new ArgumentException("kvtc device tables: the arrays do not fit the layers, channels and groups.", nameof(source));
        }

        long matrices = 0;
        for (int b = 0; b < blocks; b++)
        {
            long d = source.ChannelStarts[b + 1] - source.ChannelStarts[b];
            if (d != (long)Math.Min(source.GroupLayers, source.Layers - ((b >> 1) * source.GroupLayers)) * source.Channels)
            {
                throw new ArgumentException($"kvtc device tables: block {b} has {d} channels.", nameof(source));
            }

            long counted = 0;
            for (int w = 0; w < 8; w++)
            {
                int count = source.WidthCounts[(w * blocks) + b];
                int offset = source.WidthOffsets[(w * blocks) + b];
                if (count < 0 || offset < 0 || (long)offset + count > source.Components.Length)
                {
                    throw new ArgumentException($"kvtc device tables: width {w} of block {b} lists {count} components at {offset}.", nameof(source));
                }

                for (int i = 0; i < count; i++)
                {
                    if ((uint)source.Components[offset + i] >= (uint)d)
                    {
                        throw new ArgumentException($"kvtc device tables: block {b} has a component {source.Components[offset + i]} out of its {d}.", nameof(source));
                    }
                }

                counted += count;
            }

            if (counted != d)
            {
                throw new ArgumentException($"kvtc device tables: block {b} lists {counted} components of {d}.", nameof(source));
            }

            matrices += d * d;
        }

        if (source.ScaledInverse.Length != matrices)
        {
            throw new ArgumentException($"kvtc device tables: {source.ScaledInverse.Length} matrix elements; the blocks need {matrices}.", nameof(source));
        }

        Layers = source.Layers;
        Channels = source.Channels;
        HeadDim = source.HeadDim;
        GroupLayers = source.GroupLayers;
        Pairing = source.Pairing;
        Blocks = blocks;
        _channelStarts = source.ChannelStarts.ToArray();
        try
        {
            InverseFrequencies = Upload(context, MemoryMarshal.AsBytes(source.InverseFrequencies.AsSpan()));
            ChannelStarts = Upload(context, MemoryMarshal.AsBytes(source.ChannelStarts.AsSpan()));
            Means = Upload(context, MemoryMarshal.AsBytes(source.Means.AsSpan()));
            WidthCounts = Upload(context, MemoryMarshal.AsBytes(source.WidthCounts.AsSpan()));
            WidthOffsets = Upload(context, MemoryMarshal.AsBytes(source.WidthOffsets.AsSpan()));
            Components = Upload(context, MemoryMarshal.AsBytes(source.Components.AsSpan()));
            ScaledInverse = Upload(context, MemoryMarshal.AsBytes(source.ScaledInverse.AsSpan()));
        }
        catch
        {
            Dispose();
            throw;
        }

    }

    public int Layers { get; }

    public int Channels { get; }

    public int HeadDim { get; }

    public int GroupLayers { get; }

    public int Pairing { get; }

    public int Blocks { get; }

    /// <summary>All blocks' channels (Layers * 2 * Channels).</summary>
    public int TotalChannels => _channelStarts[^1];

    /// <summary>Block <paramref name="block"/>'s channels (and components).</summary>
    public int BlockChannels(int block) => _channelStarts[block + 1] - _channelStarts[block];

    /// <summary>Where block <paramref name="block"/>'s channels start.</summary>
    public int ChannelStart(int block) => _channelStarts[block];

    internal DeviceBuffer InverseFrequencies { get; } = null!;

    internal DeviceBuffer ChannelStarts { get; } = null!;

    internal DeviceBuffer Means { get; } = null!;

    internal DeviceBuffer WidthCounts { get; } = null!;

    internal DeviceBuffer WidthOffsets { get; } = null!;

    internal DeviceBuffer Components { get; } = null!;

    internal DeviceBuffer ScaledInverse { get; } = null!;

    public void Dispose()
    {
        foreach (DeviceBuffer buffer in _buffers)
        {
            buffer.Dispose();
        }

        _buffers.Clear();
    }

    private DeviceBuffer Upload(CudaContext context, ReadOnlySpan<byte> bytes)
    {
        DeviceBuffer buffer = context.Allocate(Math.Max(bytes.Length, 4));
        _buffers.Add(buffer);
        buffer.CopyFrom(bytes);
        return buffer;
    }
}
