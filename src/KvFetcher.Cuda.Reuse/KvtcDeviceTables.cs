using KvFetcher.Codecs.Transform;
using KvFetcher.Cuda.Kvtc;

namespace KvFetcher.Cuda.Reuse;

/// <summary>A kvtc transform at one level as the CUDA decoder's tables (<see cref="CudaKvtcTableSource"/>).</summary>
internal static class KvtcDeviceTables
{
    /// <summary>The tables of <paramref name="transform"/> at <paramref name="level"/>: synthesis rows scaled by their steps, components listed per bit width.</summary>
    public static CudaKvtcTableSource Source(KvtcTransform transform, int level)
    {
        int blocks = transform.Blocks;
        var channelStarts = new int[blocks + 1];
        long matrices = 0;
        for (int b = 0; b < blocks; b++)
        {
            channelStarts[b + 1] = transform.BlockChannelStart(b) + transform.BlockChannels(b);
            matrices += (long)transform.BlockChannels(b) * transform.BlockChannels(b);
        }

        var means = new float[channelStarts[blocks]];
        var scaled = new float[matrices];
        var counts = new int[8 * blocks];
        var offsets = new int[8 * blocks];
        var components = new int[channelStarts[blocks]];
        int listed = 0;
        long matrixAt = 0;
        for (int w = 0; w < 8; w++)
        {
            for (int b = 0; b < blocks; b++)
            {
                offsets[(w * blocks) + b] = listed;
                ReadOnlySpan<byte> bits = transform.Bits(level, b);
                for (int k = 0; k < bits.Length; k++)
                {
                    if (bits[k] == w)
                    {
                        components[listed++] = k;
                        counts[(w * blocks) + b]++;
                    }
                }
            }
        }

        for (int b = 0; b < blocks; b++)
        {
            int d = transform.BlockChannels(b);
            transform.Mean(b).CopyTo(means.AsSpan(channelStarts[b], d));
            ReadOnlySpan<float> inverse = transform.InverseMatrix(b);
            ReadOnlySpan<float> steps = transform.Steps(level, b);
            for (int k = 0; k < d; k++)
            {
                System.Numerics.Tensors.TensorPrimitives.Multiply(inverse.Slice(k * d, d), steps[k], scaled.AsSpan((int)(matrixAt + ((long)k * d)), d));
            }

            matrixAt += (long)d * d;
        }

        KvtcKeyRotation rotation = transform.KeyRotation;
        return new CudaKvtcTableSource
        {
            Layers = transform.Layers,
            Channels = transform.Channels,
            HeadDim = transform.HeadDim,
            GroupLayers = transform.GroupLayers,
            Pairing = (int)rotation.Pairing,
            InverseFrequencies = rotation.InverseFrequencies.ToArray(),
            ChannelStarts = channelStarts,
            Means = means,
            WidthCounts = counts,
            WidthOffsets = offsets,
            Components = components,
            ScaledInverse = scaled,
        };
    }
}
