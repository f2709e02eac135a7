using System.Buffers;
using System.Globalization;
using KvFetcher.Codecs.Video;
using KvFetcher.Core;
using KvFetcher.Cuda.Nvdec;
using KvFetcher.Cuda.Reuse;
using KvFetcher.Engine;

namespace KvFetcher.NvdecBench;

/// <summary>
/// <c>prepare --out DIR [--repo PATH] [--document 0] [--plan 256x2:12,10,8,4;1024x1:8,4;2048x1:8]</c>: real KV of the
/// bundled model over a held-out document, cut into chunks (the plan: chunk tokens x chunks : levels) and encoded by
/// the video codec in both layouts; checks that the CPU decoder reproduces each stream's declared planes, then writes
/// the streams.
/// </summary>
internal static class PrepareCommand
{
    public static int Run(string[] args)
    {
        string output = Args.Option(args, "--out") ?? throw new ArgumentException("prepare needs --out DIR.");
        string repo = Args.Option(args, "--repo") ?? Directory.GetCurrentDirectory();
        int document = Args.Int(args, "--document", 0);
        (int ChunkTokens, int Chunks, int[] Levels)[] plan = ParsePlan(Args.Option(args, "--plan") ?? "256x2:12,10,8,4;1024x1:8,4;2048x1:8");
        int tokens = plan.Max(p => p.ChunkTokens * p.Chunks);
        using LanguageModel model = LanguageModel.Open(Path.Combine(repo, "models", "kvf-code-32l"), new LanguageModelOptions { KvStorageDType = DType.Float16 });
        var streams = new List<BenchStream>();
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        int chunkIndex = 0;
        foreach (string path in Directory.GetFiles(Path.Combine(repo, "data", "heldout"), "*.txt").Order(StringComparer.Ordinal).Skip(document).Take(1))
        {
            int[] ids = model.Tokenizer.Encode(File.ReadAllText(path));
            if (ids.Length < tokens)
            {
                throw new ArgumentException($"{path} has {ids.Length} tokens, fewer than --tokens {tokens}.");
            }

            InferenceSession session = model.CreateSession(tokens);
            session.Prefill(ids.AsSpan(0, tokens), 0, new float[model.Config.VocabSize]);
            foreach ((int chunkTokens, int count, int[] levels) in plan)
            {
                var shape = new KvShape(model.Config.NumLayers, chunkTokens, model.Config.NumKvHeads, model.Config.HeadDim);
                var kv = new byte[shape.Elements * 2];
                for (int start = 0; start < count * chunkTokens; start += chunkTokens, chunkIndex++)
                {
                    session.Cache.Export(start, start + chunkTokens, DType.Float16, kv);
                    foreach (VideoLayoutKind layout in new[] { VideoLayoutKind.TokenTiles, VideoLayoutKind.ChannelRows })
                    {
                        var codec = new VideoCodec(layout);
                        foreach (int level in levels)
                        {
                            parameters.ResetWrittenCount();
                            payload.ResetWrittenCount();
                            codec.Encode(kv, shape, DType.Float16, start, level, parameters, payload);
                            int scales = shape.Layers * 2 * shape.Channels;
                            VideoChunkHeader header = VideoChunkFormat.ReadParameters(parameters.WrittenSpan, shape, level, new float[scales], new float[scales]);
                            NvdecStreamFormat format = NvdecVideoStreams.FormatOf(header);
                            (VideoStreamRecord k, VideoStreamRecord v) = VideoChunkFormat.ReadStreams(payload.WrittenSpan);
                            foreach ((VideoStreamRecord record, string kind) in new[] { (k, "K"), (v, "V") })
                            {
                                byte[] data = payload.WrittenSpan.Slice(record.Offset, record.Length).ToArray();
                                var planes = new byte[format.OutputBytes];
                                HevcStream.Decode(data, format.Width, format.Height, format.Depth, format.Frames, planes, kind);
                                if (HevcStream.Checksum(planes) != record.Checksum)
                                {
                                    throw new InvalidDataException($"The CPU decoder does not reproduce the {kind} stream of {layout} level {level} chunk {chunkIndex}.");
                                }

                                streams.Add(new BenchStream(layout.ToString(), chunkTokens, level, kind, chunkIndex, format, record.Checksum, kv.Length / 2, data));
                            }
                        }
                    }
                }
            }
        }

        StreamSet.Write(output, streams);
        Console.WriteLine($"{streams.Count} streams, {streams.Sum(s => (long)s.Data.Length).ToString("N0", CultureInfo.InvariantCulture)} bytes, in {output}");
        foreach (IGrouping<string, BenchStream> group in streams.GroupBy(s => s.Group))
        {
            BenchStream first = group.First();
            double ratio = (double)group.Sum(s => s.Fp16Bytes) / group.Sum(s => s.Data.Length);
            Console.WriteLine($"  {group.Key,-20} {first.Format.Width}x{first.Format.Height}x{first.Format.Frames} {first.Format.Depth}-bit: {group.Count()} streams, {ratio:F2}x smaller than fp16");
        }

        return 0;
    }

    private static (int ChunkTokens, int Chunks, int[] Levels)[] ParsePlan(string plan) =>
        plan.Split(';').Select(part =>
        {
            string[] sides = part.Split(':');
            string[] size = sides[0].Split('x');
            return (int.Parse(size[0], CultureInfo.InvariantCulture), int.Parse(size[1], CultureInfo.InvariantCulture),
                sides[1].Split(',').Select(l => int.Parse(l, CultureInfo.InvariantCulture)).ToArray());
        }).ToArray();
}
