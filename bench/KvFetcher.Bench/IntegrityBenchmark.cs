using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.IO.Hashing;
using System.Security.Cryptography;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Core.Keys;
using KvFetcher.Engine.Model;

namespace KvFetcher.Bench;

/// <summary>
/// <c>integrity</c>: what authenticity costs per chunk, side by side with the checksum every read already pays: XxHash3
/// (the container checksum), HMAC-SHA256 (the chunk MAC) and whole container writes and verified reads with and without
/// a MAC, for the bundled model's and a Llama-3-8B-shaped 256-token chunk. <c>fingerprint</c>: the model fingerprint's
/// cost on a multi-GB checkpoint (full content hash, serial and parallel) and the cached path (statx per file).
/// </summary>
internal static class IntegrityBenchmark
{
    public const string Usage =
        """
        usage: kvfetch-bench integrity [--repeats N]
               kvfetch-bench fingerprint [--gb N] [--dir DIR]
        """;

    public static int RunIntegrity(string[] args)
    {
        int repeats = int.Parse(BenchArgs.Option(args, "--repeats") ?? "20", CultureInfo.InvariantCulture);
        ModelConfig bundled = ModelConfig.Load(Path.Combine(BenchArgs.BundledModel(), LoadedModel.ConfigFileName));
        (string Name, KvShape Shape)[] chunks =
        [
            ("bundled 16M, 256 tokens", new KvShape(bundled.NumLayers, 256, bundled.NumKvHeads, bundled.HeadDim)),
            ("Llama-3-8B shape, 256 tokens", new KvShape(32, 256, 8, 128)),
        ];
        var mac = new ChunkAuthenticator(RandomNumberGenerator.GetBytes(32)).ForTenant("bench");
        Console.WriteLine($"| chunk | bytes | XxHash3 checksum MB/s | HMAC-SHA256 MB/s | SHA-256 MB/s | write plain MB/s | write sealed MB/s | read plain MB/s | read+verify sealed MB/s |");
        Console.WriteLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        foreach ((string name, KvShape shape) in chunks)
        {
            int bytes = checked((int)(shape.Elements * 2));
            byte[] kv = RandomNumberGenerator.GetBytes(bytes);
            var header = new ChunkHeader
            {
                Codec = CodecId.Raw, DType = DType.Float16, Key = new ChunkKey(new Hash256(1, 2, 3, 4)), Model = new ModelFingerprint(new Hash256(5, 6, 7, 8)),
                TokenStart = 256, Shape = shape,
            };
            var expectation = new ChunkExpectation(header.Key, header.Model, header.TokenStart, shape, DType.Float16);
            var output = new ArrayBufferWriter<byte>(bytes + 4096);
            byte[] tag = new byte[32];
            ChunkContainer.Write(header, [], kv, output);
            byte[] plain = output.WrittenSpan.ToArray();
            output.ResetWrittenCount();
            ChunkContainer.Write(header, [], kv, output, mac);
            byte[] sealedContainer = output.WrittenSpan.ToArray();

            double checksum = Rate(bytes, repeats, () => XxHash3.HashToUInt64(kv));
            double hmac = Rate(bytes, repeats, () => mac.ComputeTag(kv, tag));
            double sha = Rate(bytes, repeats, () => SHA256.HashData(kv, tag));
            double writePlain = Rate(bytes, repeats, () => { output.ResetWrittenCount(); ChunkContainer.Write(header, [], kv, output); });
            double writeSealed = Rate(bytes, repeats, () => { output.ResetWrittenCount(); ChunkContainer.Write(header, [], kv, output, mac); });
            double readPlain = Rate(bytes, repeats, () => ChunkContainer.Read(plain, expectation, out _, out _));
            double readSealed = Rate(bytes, repeats, () => ChunkContainer.Read(sealedContainer, expectation with { Mac = mac }, out _, out _));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {name} | {bytes:N0} | {checksum:F0} | {hmac:F0} | {sha:F0} | {writePlain:F0} | {writeSealed:F0} | {readPlain:F0} | {readSealed:F0} |"));
        }

        return 0;
    }

    public static int RunFingerprint(string[] args)
    {
        int gigabytes = int.Parse(BenchArgs.Option(args, "--gb") ?? "4", CultureInfo.InvariantCulture);
        string directory = BenchArgs.Option(args, "--dir") ?? Directory.CreateTempSubdirectory("kvf-fingerprint-").FullName;
        try
        {
            // A checkpoint of `gigabytes` 1 GiB bf16 tensors (random content), next to the bundled model's config.
            File.Copy(Path.Combine(BenchArgs.BundledModel(), LoadedModel.ConfigFileName), Path.Combine(directory, LoadedModel.ConfigFileName), overwrite: true);
            const int TensorBytes = 1 << 30;
            byte[] data = GC.AllocateUninitializedArray<byte>(TensorBytes);
            Random.Shared.NextBytes(data);
            SafeTensorsWriter.Write(Path.Combine(directory, ModelWeights.SingleFileName),
                Enumerable.Range(0, gigabytes).Select(i => ($"layer.{i}.weight", DType.BFloat16, new[] { TensorBytes / 2 / 4096, 4096 }, (ReadOnlyMemory<byte>)data)));
            data = [];
            ModelConfig config = ModelConfig.Load(Path.Combine(directory, LoadedModel.ConfigFileName));
            using ModelWeights weights = ModelWeights.Open(directory);
            long total = (long)gigabytes * TensorBytes;
            ModelFingerprinter.Compute(config, weights); // pages the file in: the engine reads every weight at load anyway

            double serial = Seconds(() => ModelFingerprinter.Compute(config, weights, maxParallelism: 1));
            double parallel = Seconds(() => ModelFingerprinter.Compute(config, weights));
            ModelFingerprinter.FileStamp(directory, weights);
            double stamp = Enumerable.Range(0, 9).Select(_ => Seconds(() => ModelFingerprinter.FileStamp(directory, weights))).Order().ElementAt(4);
            Console.WriteLine($"| checkpoint | cores | full hash, 1 core | full hash, all cores | cached path (statx of every file) |");
            Console.WriteLine("| ---: | ---: | ---: | ---: | ---: |");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {total / 1e9:F2} GB | {Environment.ProcessorCount} | {serial:F2} s ({total / serial / 1e9:F2} GB/s) | {parallel:F2} s ({total / parallel / 1e9:F2} GB/s) | {stamp * 1e3:F3} ms |"));
            return 0;
        }
        finally
        {
            if (BenchArgs.Option(args, "--dir") is null)
            {
                Directory.Delete(directory, recursive: true);
            }
        }
    }

    /// <summary>Median MB/s of <paramref name="action"/> over <paramref name="bytes"/>.</summary>
    private static double Rate(long bytes, int repeats, Action action)
    {
        action();
        var seconds = new double[repeats];
        for (int i = 0; i < repeats; i++)
        {
            seconds[i] = Seconds(action);
        }

        Array.Sort(seconds);
        return bytes / seconds[repeats / 2] / 1e6;
    }

    private static double Seconds(Action action)
    {
        long start = Stopwatch.GetTimestamp();
        action();
        return Stopwatch.GetElapsedTime(start).TotalSeconds;
    }
}
