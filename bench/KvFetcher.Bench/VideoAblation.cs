using System.Buffers;
using System.Globalization;
using KvFetcher.Codecs.Video;
using KvFetcher.Core;
using KvFetcher.Core.Numerics;
using KvFetcher.Codecs.Transform;
using KvFetcher.Engine;
using KvFetcher.Fetch.Calibration;

namespace KvFetcher.Bench;

/// <summary>
/// <c>kvfetch-bench video-ablation</c>: KVFetcher's layout ablation on real KV: the size of the quantized integers alone,
/// then lossless HEVC with intra prediction only (every frame its own stream), then intra + inter (one stream per K/V),
/// per layout and bit depth, relative to fp16; and the same with keys taken back before RoPE (the rotation of each
/// token's position undone, as kvtc codes them), which KVQuant finds easier to quantize and which could leave
/// neighbouring tokens' keys more alike for HEVC's prediction.
/// </summary>
internal static class VideoAblation
{
    private const int ChunkTokens = 256;

    public static int Run(string[] args)
    {
        string root = BenchArgs.RepositoryRoot();
        int documents = int.Parse(BenchArgs.Option(args, "--max-documents") ?? "4", CultureInfo.InvariantCulture);
        int prefix = int.Parse(BenchArgs.Option(args, "--prefix") ?? "2048", CultureInfo.InvariantCulture);
        using LanguageModel lm = LanguageModel.Open(BenchArgs.BundledModel(), new LanguageModelOptions { KvStorageDType = DType.Float16 });
        var shape = new KvShape(lm.Config.NumLayers, ChunkTokens, lm.Config.NumKvHeads, lm.Config.HeadDim);
        var kv = new byte[shape.Elements * 2];
        var preRope = new byte[kv.Length];
        KvtcKeyRotation rotation = TransformCalibration.KeyRotationOf(lm.Config);
        long fp16 = 0;
        var sizes = new Dictionary<string, long>();
        byte[] preset = [.. "ultrafast"u8, 0];
        var output = new ArrayBufferWriter<byte>();
        foreach (string path in Directory.GetFiles(Path.Combine(root, "data", "heldout"), "*.txt").Order(StringComparer.Ordinal).Take(documents))
        {
            int[] ids = lm.Tokenizer.Encode(File.ReadAllText(path));
            InferenceSession session = lm.CreateSession(prefix);
            session.Prefill(ids.AsSpan(0, prefix), 0, new float[lm.Config.VocabSize]);
            for (int start = 0; start < prefix; start += ChunkTokens)
            {
                session.Cache.Export(start, start + ChunkTokens, DType.Float16, kv);
                fp16 += kv.Length;
                UnrotateKeys(kv, preRope, shape, start, rotation);
                foreach ((VideoLayoutKind layout, bool keysBeforeRope) in new[] { (VideoLayoutKind.TokenTiles, false), (VideoLayoutKind.ChannelRows, false), (VideoLayoutKind.TokenTiles, true) })
                {
                    var codec = new VideoCodec(layout);
                    byte[] source = keysBeforeRope ? preRope : kv;
                    (int width, int height, int frames) = codec.Geometry(shape);
                    int frameBytes = width * height * 3;
                    foreach (int bits in new[] { 8, 4 })
                    {
                        string name = $"{layout}{(keysBeforeRope ? " K pre-RoPE" : "")} {bits}-bit";
                        Add(sizes, $"{name}|quantized", shape.Elements * bits / 8);
                        for (int kind = 0; kind < 2; kind++)
                        {
                            byte[] planes = codec.QuantizedFrames(source, shape, DType.Float16, bits, kind);
                            output.ResetWrittenCount();
                            Codecs.Video.HevcStream.Encode(planes, width, height, 8, frames, preset, 0, output);
                            Add(sizes, $"{name}|intra+inter", output.WrittenCount);
                            for (int f = 0; f < frames; f++)
                            {
                                output.ResetWrittenCount();
                                Codecs.Video.HevcStream.Encode(planes.AsSpan(f * frameBytes, frameBytes), width, height, 8, 1, preset, 0, output);
                                Add(sizes, $"{name}|intra", output.WrittenCount);
                            }
                        }
                    }
                }
            }
        }

        Console.WriteLine($"Video layout ablation, kvf-code-32l fp16 KV, {documents} held-out documents x {prefix / ChunkTokens} chunks of {ChunkTokens} tokens; x smaller than fp16 (payload only, no scales)");
        Console.WriteLine($"{"layout / bits",-34} {"quantized",10} {"+ intra",10} {"+ inter",10}");
        foreach (string name in sizes.Keys.Select(k => k.Split('|')[0]).Distinct())
        {
            Console.WriteLine($"{name,-34} {(double)fp16 / sizes[name + "|quantized"],10:F2} {(double)fp16 / sizes[name + "|intra"],10:F2} {(double)fp16 / sizes[name + "|intra+inter"],10:F2}");
        }

        return 0;
    }

    /// <summary>The chunk with each key turned back by its position's rotary angles (values as they are), in fp16.</summary>
    private static void UnrotateKeys(ReadOnlySpan<byte> kv, Span<byte> destination, KvShape shape, int tokenStart, KvtcKeyRotation rotation)
    {
        var values = new float[shape.Elements];
        FloatConversions.ToSingle(DType.Float16, kv, values);
        int half = shape.HeadDim / 2;
        var cos = new float[half];
        var sin = new float[half];
        for (int t = 0; t < shape.Tokens; t++)
        {
            rotation.Angles(tokenStart + t, cos, sin);
            for (int layer = 0; layer < shape.Layers; layer++)
            {
                long keys = (long)layer * 2 * shape.Tokens * shape.Channels; // kind 0 of the layer
                rotation.Rotate(values.AsSpan((int)(keys + ((long)t * shape.Channels)), shape.Channels), shape.HeadDim, cos, sin, inverse: true);
            }
        }

        FloatConversions.FromSingle(DType.Float16, values, destination);
    }

    private static void Add(Dictionary<string, long> sizes, string key, long bytes) => sizes[key] = sizes.GetValueOrDefault(key) + bytes;
}
