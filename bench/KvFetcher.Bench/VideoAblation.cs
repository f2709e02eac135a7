using System.Buffers;
using System.Globalization;
using KvFetcher.Codecs.Video;
using KvFetcher.Core;
using KvFetcher.Engine;

namespace KvFetcher.Bench;

/// <summary>
/// <c>kvfetch-bench video-ablation</c>: KVFetcher's layout ablation on real KV: the size of the quantized integers alone,
/// then lossless HEVC with intra prediction only (every frame its own stream), then intra + inter (one stream per K/V),
/// per layout and bit depth, relative to fp16.
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
                foreach (VideoLayoutKind layout in new[] { VideoLayoutKind.TokenTiles, VideoLayoutKind.ChannelRows })
                {
                    var codec = new VideoCodec(layout);
                    (int width, int height, int frames) = codec.Geometry(shape);
                    int frameBytes = width * height * 3;
                    foreach (int bits in new[] { 8, 4 })
                    {
                        string name = $"{layout} {bits}-bit";
                        Add(sizes, $"{name}|quantized", shape.Elements * bits / 8);
                        for (int kind = 0; kind < 2; kind++)
                        {
                            byte[] planes = codec.QuantizedFrames(kv, shape, DType.Float16, bits, kind);
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
        Console.WriteLine($"{"layout / bits",-22} {"quantized",10} {"+ intra",10} {"+ inter",10}");
        foreach (string name in sizes.Keys.Select(k => k.Split('|')[0]).Distinct())
        {
            Console.WriteLine($"{name,-22} {(double)fp16 / sizes[name + "|quantized"],10:F2} {(double)fp16 / sizes[name + "|intra"],10:F2} {(double)fp16 / sizes[name + "|intra+inter"],10:F2}");
        }

        return 0;
    }

    private static void Add(Dictionary<string, long> sizes, string key, long bytes) => sizes[key] = sizes.GetValueOrDefault(key) + bytes;
}
