using System.Buffers;
using System.Buffers.Binary;
using KvFetcher.Codecs.Transform;
using KvFetcher.Core;
using KvFetcher.Core.Numerics;

namespace KvFetcher.Codecs.Tests.Transform;

/// <summary>Version 2 of the kvtc chunk: every bit width's symbols in independent rANS segments, checked on the host.</summary>
public class KvtcSegmentTests
{
    private const int Tokens = 256;
    private const int Level = 1;

    [Fact]
    public void EncodeDecode_ChunkOfManySegments_SegmentsTileEachWidthAndDecode()
    {
        KvtcTransform transform = KvtcTestTransforms.ForRealKv;
        var codec = new TransformCodec(transform);
        (byte[] kv, KvShape shape, byte[] parameters, byte[] payload) = Encoded(codec, Level);
        var layout = new KvtcChunkLayout();
        layout.Read(parameters, payload, shape, DType.Float16, Level, transform);

        bool partialLast = false;
        ReadOnlySpan<int> segments = layout.Segments;
        int at = 0;
        for (int b = 1; b <= KvtcTransform.MaxBits; b++)
        {
            long n = layout.SymbolStart(b + 1) - layout.SymbolStart(b);
            Assert.Equal(n > 0, layout.HasTable(b));
            long expected = (n + KvtcChunkFormat.SegmentSymbols - 1) / KvtcChunkFormat.SegmentSymbols;
            long symbols = 0;
            for (int i = 0; i < expected; i++, at++)
            {
                ReadOnlySpan<int> segment = segments.Slice(at * KvtcChunkLayout.SegmentFields, KvtcChunkLayout.SegmentFields);
                Assert.Equal(b, segment[KvtcChunkLayout.BitsField]);
                Assert.Equal(i < expected - 1 ? KvtcChunkFormat.SegmentSymbols : n - ((expected - 1) * KvtcChunkFormat.SegmentSymbols), segment[KvtcChunkLayout.SymbolsField]);
                symbols += segment[KvtcChunkLayout.SymbolsField];
            }

            Assert.Equal(n, symbols);
            partialLast |= expected >= 2 && n % KvtcChunkFormat.SegmentSymbols != 0;
        }

        Assert.Equal(layout.SegmentCount, at);
        Assert.True(partialLast, "some bit width should have several segments and a partial last one");
        var decoded = new byte[kv.Length];
        codec.Decode(parameters, payload, shape, DType.Float16, KvtcTestTransforms.FitTokens, Level, decoded);
        double error = RelativeError(kv, decoded);
        Assert.True(error < Math.Max(4 * (1 - transform.KeptVariance(Level)), 0.02), $"relative squared error {error:F4}");
    }

    [Fact]
    public void EncodeDecode_ExactTokensOnly_PayloadIsTheExactValues()
    {
        var codec = new TransformCodec(KvtcTestTransforms.ForRealKv);
        (byte[] kv, KvShape shape) = RealKv.Chunk(KvtcTestTransforms.FitTokens, 3, DType.Float16);
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        codec.Encode(kv, shape, DType.Float16, KvtcTestTransforms.FitTokens, Level, parameters, payload);
        Assert.Equal(kv.Length, payload.WrittenCount);
        var decoded = new byte[kv.Length];
        codec.Decode(parameters.WrittenSpan, payload.WrittenSpan, shape, DType.Float16, KvtcTestTransforms.FitTokens, Level, decoded);
        Assert.Equal(kv, decoded);
    }

    public static TheoryData<string> Corruptions => ["stream bytes past the payload", "segment count plus one", "segment count huge", "boundary moved", "segments overlap",
        "escapes of a segment plus one", "escape count plus one", "escape count huge", "payload truncated", "payload lengthened", "version 1"];

    [Theory]
    [MemberData(nameof(Corruptions))]
    public void Decode_HostileSegmentTable_InvalidKvData(string corruption)
    {
        KvtcTransform transform = KvtcTestTransforms.ForRealKv;
        var codec = new TransformCodec(transform);
        (byte[] kv, KvShape shape, byte[] parameters, byte[] payload) = Encoded(codec, Level);
        var layout = new KvtcChunkLayout();
        layout.Read(parameters, payload, shape, DType.Float16, Level, transform);
        (int entries, int count) = FirstWidthWithSegments(layout);
        byte[] p = (byte[])parameters.Clone();
        byte[] q = (byte[])payload.Clone();
        switch (corruption)
        {
            case "stream bytes past the payload":
                Add(q, entries, q.Length);
                break;
            case "segment count plus one":
                Add(q, entries - 4, 1);
                break;
            case "segment count huge":
                BinaryPrimitives.WriteUInt32LittleEndian(q.AsSpan(entries - 4), 1u << 30);
                break;
            case "boundary moved":
                Add(q, entries, 1);
                Add(q, entries + KvtcChunkFormat.SegmentEntryBytes, -1);
                break;
            case "segments overlap":
                // Segment 1 claims to start 8 bytes into segment 0: the lengths are shifted so that the sum still fits.
                Add(q, entries, -8);
                Add(q, entries + KvtcChunkFormat.SegmentEntryBytes, 8);
                break;
            case "escapes of a segment plus one":
                Add(q, entries + 4, 1);
                Add(q, entries + KvtcChunkFormat.SegmentEntryBytes + 4, -Math.Min(1, (int)BinaryPrimitives.ReadUInt32LittleEndian(q.AsSpan(entries + KvtcChunkFormat.SegmentEntryBytes + 4))));
                break;
            case "escape count plus one":
                Add(q, layout.EscapeOffset - 4, 1);
                break;
            case "escape count huge":
                BinaryPrimitives.WriteUInt32LittleEndian(q.AsSpan(layout.EscapeOffset - 4), uint.MaxValue);
                break;
            case "payload truncated":
                q = q[..^3];
                break;
            case "payload lengthened":
                q = [.. q, 0, 0];
                break;
            default:
                p[0] = 1;
                break;
        }

        Assert.True(count >= 2);
        var destination = new byte[kv.Length];
        InvalidKvDataException e = Assert.Throws<InvalidKvDataException>(() => codec.Decode(p, q, shape, DType.Float16, KvtcTestTransforms.FitTokens, Level, destination));
        if (corruption == "version 1")
        {
            Assert.Contains("version 1", e.Message, StringComparison.Ordinal);
        }
    }

    /// <summary>The first bit width with two segments or more: where its segment table starts and its segment count.</summary>
    private static (int Entries, int Count) FirstWidthWithSegments(KvtcChunkLayout layout)
    {
        ReadOnlySpan<int> segments = layout.Segments;
        int first = 0;
        while (first < layout.SegmentCount)
        {
            int bits = segments[(first * KvtcChunkLayout.SegmentFields) + KvtcChunkLayout.BitsField];
            int count = 0;
            while (first + count < layout.SegmentCount && segments[((first + count) * KvtcChunkLayout.SegmentFields) + KvtcChunkLayout.BitsField] == bits)
            {
                count++;
            }

            if (count >= 2)
            {
                return (segments[(first * KvtcChunkLayout.SegmentFields) + KvtcChunkLayout.StreamOffsetField] - (count * KvtcChunkFormat.SegmentEntryBytes), count);
            }

            first += count;
        }

        return (0, 0);
    }

    private static void Add(byte[] payload, int at, int delta) =>
        BinaryPrimitives.WriteUInt32LittleEndian(payload.AsSpan(at), (uint)((int)BinaryPrimitives.ReadUInt32LittleEndian(payload.AsSpan(at)) + delta));

    private static (byte[] Kv, KvShape Shape, byte[] Parameters, byte[] Payload) Encoded(TransformCodec codec, int level)
    {
        (byte[] kv, KvShape shape) = RealKv.Chunk(KvtcTestTransforms.FitTokens, Tokens, DType.Float16);
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        codec.Encode(kv, shape, DType.Float16, KvtcTestTransforms.FitTokens, level, parameters, payload);
        return (kv, shape, parameters.WrittenSpan.ToArray(), payload.WrittenSpan.ToArray());
    }

    /// <summary>Squared error over the signal's squared magnitude (the exact tokens count as zero error).</summary>
    private static double RelativeError(byte[] original, byte[] decoded)
    {
        var a = new float[original.Length / 2];
        var b = new float[decoded.Length / 2];
        FloatConversions.ToSingle(DType.Float16, original, a);
        FloatConversions.ToSingle(DType.Float16, decoded, b);
        double error = 0, signal = 0;
        for (int i = 0; i < a.Length; i++)
        {
            error += Math.Pow(a[i] - b[i], 2);
            signal += Math.Pow(a[i], 2);
        }

        return error / signal;
    }
}
