using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using KvFetcher.Codecs.Transform;
using KvFetcher.Core;
using KvFetcher.Core.Keys;
using KvFetcher.Cuda.Kvtc;
using KvFetcher.Cuda.Reuse;

namespace KvFetcher.Cuda.Tests;

/// <summary>
/// The kvtc kernels (Gpu/Kernels/Kvtc.cu) mirrored step for step on the host, fed exactly what the GPU decoder uploads
/// (the chunk layout's segments and decode tables, <see cref="KvtcDeviceTables"/>), against the codec's CPU decoder:
/// checks the tables, the segment cursors and the index arithmetic without a device (the device check compares the real
/// kernels).
/// </summary>
public class KvtcKernelEmulationTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(5)]
    public void EmulatedKernels_TablesTheDecoderUploads_SameAsCpuDecoder(int level)
    {
        const int Layers = 3;
        const int KvHeads = 2;
        const int HeadDim = 8;
        var rotation = new KvtcKeyRotation(KvtcKeyPairing.HalfSplit, [1f, 0.1f, 0.01f, 0.001f]);
        var fitter = new KvtcFitter(Layers, KvHeads, HeadDim, rotation, exactHead: 2, exactTail: 3, groupLayers: 2);
        var random = new Random(7);
        for (int i = 0; i < 8; i++)
        {
            var fitShape = new KvShape(Layers, 64, KvHeads, HeadDim);
            fitter.Add(Correlated(fitShape, random), fitShape, DType.Float32, i * 64);
        }

        KvtcTransform transform = fitter.Build(new ModelFingerprint(new Hash256(9, 0, 0, 9)));
        var codec = new TransformCodec(transform);
        var shape = new KvShape(Layers, 3000, KvHeads, HeadDim);
        byte[] kv = Correlated(shape, random);
        const long TokenStart = 1000;
        var parameters = new ArrayBufferWriter<byte>();
        var payloadWriter = new ArrayBufferWriter<byte>();
        codec.Encode(kv, shape, DType.Float32, TokenStart, level, parameters, payloadWriter);
        byte[] payload = payloadWriter.WrittenSpan.ToArray();
        var cpu = new byte[kv.Length];
        codec.Decode(parameters.WrittenSpan, payload, shape, DType.Float32, TokenStart, level, cpu);

        var layout = new KvtcChunkLayout();
        layout.Read(parameters.WrittenSpan, payload, shape, DType.Float32, level, transform);
        Assert.True(layout.SegmentCount > 7, $"{layout.SegmentCount} segments");
        CudaKvtcTableSource source = KvtcDeviceTables.Source(transform, level);
        var decodeTables = new byte[CudaKvtcDecoder.DecodeTablesBytes];
        layout.CopyDecodeTables(decodeTables.AsSpan(0, CudaKvtcDecoder.SlotTableBytes), MemoryMarshal.Cast<byte, uint>(decodeTables.AsSpan(CudaKvtcDecoder.SlotTableBytes)));
        float[] gpu = Emulate(source, payload, decodeTables, layout.Segments.ToArray(), layout.SegmentCount, layout.EscapeOffset, shape.Tokens,
            layout.ExactHead, layout.ExactTail, TokenStart);

        float[] expected = MemoryMarshal.Cast<byte, float>(cpu).ToArray();
        float largest = expected.Max(Math.Abs);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.True(Math.Abs(gpu[i] - expected[i]) <= (1e-5f * largest) + 1e-6f, $"value {i}: emulated {gpu[i]}, cpu {expected[i]}");
        }
    }

    /// <summary>Kvtc.cu's kvtc_copy_exact, kvtc_decode_segments (status 0 asserted), the cuBLAS product and kvtc_finish, in fp32.</summary>
    private static float[] Emulate(CudaKvtcTableSource t, byte[] payload, byte[] decodeTables, int[] segments, int segmentCount, int escapeOffset, int tokens,
        int head, int tail, long tokenStart)
    {
        int planes = t.Layers * 2;
        int channels = t.Channels;
        int blocks = t.ChannelStarts.Length - 1;
        int coded = tokens - head - tail;
        var destination = new float[planes * tokens * channels];
        ReadOnlySpan<float> exact = MemoryMarshal.Cast<byte, float>(payload.AsSpan(0, planes * (head + tail) * channels * sizeof(float)));
        for (int p = 0; p < planes; p++)
        {
            ReadOnlySpan<float> rows = exact.Slice(p * (head + tail) * channels, (head + tail) * channels);
            rows[..(head * channels)].CopyTo(destination.AsSpan(p * tokens * channels));
            rows[(head * channels)..].CopyTo(destination.AsSpan(((p * tokens) + tokens - tail) * channels));
        }

        var coefficients = new float[coded * t.ChannelStarts[blocks]];
        ReadOnlySpan<uint> entriesAll = MemoryMarshal.Cast<byte, uint>(decodeTables.AsSpan(CudaKvtcDecoder.SlotTableBytes));
        for (int index = 0; index < segmentCount; index++)
        {
            ReadOnlySpan<int> segment = segments.AsSpan(index * CudaKvtcDecoder.SegmentFields, CudaKvtcDecoder.SegmentFields);
            int streamOffset = segment[0], length = segment[1], n = segment[2], firstEscape = segment[3], escapes = segment[4], bits = segment[5];
            ReadOnlySpan<byte> slots = decodeTables.AsSpan((bits - 1) * 4096, 4096);
            ReadOnlySpan<uint> entries = entriesAll.Slice((bits - 1) * 256, 256);
            int block = segment[6], token = segment[7], j = segment[8], m = 0, d = 0, list = 0;
            long baseAt = 0;
            void Enter()
            {
                while (block < blocks && t.WidthCounts[(bits * blocks) + block] == 0)
                {
                    block++;
                }

                if (block < blocks)
                {
                    m = t.WidthCounts[(bits * blocks) + block];
                    list = t.WidthOffsets[(bits * blocks) + block];
                    d = t.ChannelStarts[block + 1] - t.ChannelStarts[block];
                    baseAt = (long)coded * t.ChannelStarts[block];
                }
            }

            Enter();
            uint x0 = BinaryPrimitives.ReadUInt32LittleEndian(payload.AsSpan(streamOffset));
            uint x1 = BinaryPrimitives.ReadUInt32LittleEndian(payload.AsSpan(streamOffset + 4));
            Assert.InRange(x0, 1u << 23, (1u << 31) - 1);
            Assert.InRange(x1, 1u << 23, (1u << 31) - 1);
            int read = 8, used = 0;
            int Step(ref uint x, ReadOnlySpan<byte> slotSymbols, ReadOnlySpan<uint> symbolEntries)
            {
                uint slot = x & 4095u;
                int symbol = slotSymbols[(int)slot];
                uint entry = symbolEntries[symbol];
                x = ((entry >> 16) * (x >> 12)) + slot - (entry & 0xffffu);
                return symbol;
            }

            void Refill(ref uint x)
            {
                while (x < (1u << 23))
                {
                    Assert.True(read < length, "status 2: the stream ended early");
                    x = (x << 8) | payload[streamOffset + read++];
                }
            }

            for (int i = 0; i < n; i += 2)
            {
                int s0 = Step(ref x0, slots, entries);
                bool second = i + 1 < n;
                int s1 = second ? Step(ref x1, slots, entries) : 0;
                Refill(ref x0);
                if (second)
                {
                    Refill(ref x1);
                }

                foreach (int symbol in second ? new[] { s0, s1 } : [s0])
                {
                    Assert.True(block < blocks, "status 4: symbols past the last block");
                    int q = symbol - 127;
                    if (symbol == 255)
                    {
                        Assert.True(used < escapes, "status 3: more escapes than declared");
                        q = BinaryPrimitives.ReadInt16LittleEndian(payload.AsSpan(escapeOffset + (2 * (firstEscape + used))));
                        used++;
                    }

                    coefficients[baseAt + ((long)token * d) + t.Components[list + j]] = q;
                    if (++j == m)
                    {
                        j = 0;
                        if (++token == coded)
                        {
                            token = 0;
                            block++;
                            Enter();
                        }
                    }
                }
            }

            Assert.True(read == length && x0 == 1u << 23 && x1 == 1u << 23 && used == escapes, "status 5");
        }

        // The product, block by block: y[t][ch] = sum over k of coefficients[t][k] * scaledInverse[k][ch].
        var y = new float[coefficients.Length];
        long matrixAt = 0;
        for (int block = 0; block < blocks; block++)
        {
            int d = t.ChannelStarts[block + 1] - t.ChannelStarts[block];
            long at = (long)coded * t.ChannelStarts[block];
            for (int token = 0; token < coded; token++)
            {
                for (int ch = 0; ch < d; ch++)
                {
                    double sum = 0;
                    for (int k = 0; k < d; k++)
                    {
                        sum += (double)coefficients[at + ((long)token * d) + k] * t.ScaledInverse[matrixAt + ((long)k * d) + ch];
                    }

                    y[at + ((long)token * d) + ch] = (float)sum;
                }
            }

            matrixAt += (long)d * d;
        }

        for (long i = 0; i < (long)planes * coded * channels; i++)
        {
            int c = (int)(i % channels);
            long rest = i / channels;
            int token = (int)(rest % coded);
            int p = (int)(rest / coded);
            int layer = p >> 1, kind = p & 1;
            int block = ((layer / t.GroupLayers) * 2) + kind;
            int ch = ((layer % t.GroupLayers) * channels) + c;
            int d = t.ChannelStarts[block + 1] - t.ChannelStarts[block];
            long row = ((long)coded * t.ChannelStarts[block]) + ((long)token * d);
            int meanAt = t.ChannelStarts[block];
            float v = y[row + ch] + t.Means[meanAt + ch];
            if (kind == 0 && t.Pairing != 0)
            {
                int half = t.HeadDim / 2;
                int within = c % t.HeadDim;
                bool first = t.Pairing == 1 ? within < half : (within & 1) == 0;
                int pair = t.Pairing == 1 ? (first ? within : within - half) : within >> 1;
                int partner = t.Pairing == 1 ? (first ? ch + half : ch - half) : (first ? ch + 1 : ch - 1);
                float other = y[row + partner] + t.Means[meanAt + partner];
                float angle = (float)(tokenStart + head + token) * t.InverseFrequencies[pair];
                float cs = (float)Math.Cos(angle);
                float sn = (float)Math.Sin(angle);
                v = first ? (v * cs) - (other * sn) : (v * cs) + (other * sn);
            }

            destination[(((p * tokens) + head + token) * channels) + c] = v;
        }

        return destination;
    }

    /// <summary>KV whose channels move together (a few shared factors plus noise), as fp32 bytes.</summary>
    private static byte[] Correlated(KvShape shape, Random random)
    {
        var values = new float[shape.Elements];
        int c = shape.Channels;
        var factors = new float[3 * c];
        var factorRandom = new Random(1);
        for (int i = 0; i < factors.Length; i++)
        {
            factors[i] = (float)(factorRandom.NextDouble() - 0.5) * 4;
        }

        for (int p = 0; p < shape.Layers * 2; p++)
        {
            for (int tk = 0; tk < shape.Tokens; tk++)
            {
                double a = random.NextDouble() - 0.5, b = random.NextDouble() - 0.5, e = random.NextDouble() - 0.5;
                for (int j = 0; j < c; j++)
                {
                    values[(((p * shape.Tokens) + tk) * c) + j] = (float)((a * factors[j]) + (b * factors[c + j]) + (e * factors[(2 * c) + j]) + (0.05 * (random.NextDouble() - 0.5)) + (p * 0.1));
                }
            }
        }

        var bytes = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        return bytes;
    }
}
