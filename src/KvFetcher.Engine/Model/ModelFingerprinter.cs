using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using KvFetcher.Core;
using KvFetcher.Core.Keys;

namespace KvFetcher.Engine.Model;

/// <summary>
/// Computes a model's <see cref="ModelFingerprint"/>: SHA-256 over a canonical form of the architecture config and,
/// for every tensor in name order, its name, dtype, shape and the SHA-256 of each 64 MiB block of its bytes (blocks
/// are hashed in parallel). The result is cached next to the model in <see cref="CacheFileName"/>, valid while every
/// weight and config file keeps its device, inode, size, modification time and change time (ctime). An in-place edit
/// cannot fool it: restoring a file's mtime (touch -d, utime) still moves its ctime, which only the kernel sets. Where
/// statx is not available (not Linux) nothing is cached and the fingerprint is computed at each load; a read-only model
/// directory likewise just means it is recomputed.
/// </summary>
public static class ModelFingerprinter
{
    /// <summary>The cache file written into the model directory.</summary>
    public const string CacheFileName = "kvfetch.fingerprint";

    private const string CacheHeader = "kvfetch-fingerprint v2";

    /// <summary>Bytes per hashed block: the unit of parallel hashing.</summary>
    private const int BlockBytes = 64 << 20;

    /// <summary>The fingerprint of <paramref name="model"/>, from the cache file when it is still valid.</summary>
    public static ModelFingerprint Get(LoadedModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        string cachePath = Path.Combine(model.Directory, CacheFileName);
        string? stamp = FileStamp(model.Directory, model.Weights);
        if (stamp is not null && TryReadCache(cachePath, stamp, out ModelFingerprint cached))
        {
            return cached;
        }

        ModelFingerprint fingerprint = Compute(model.Config, model.Weights);
        if (stamp is null)
        {
            return fingerprint;
        }

        try
        {
            File.WriteAllText(cachePath, $"{CacheHeader}\n{fingerprint}\n{stamp}");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // A read-only model directory: the fingerprint is simply recomputed next time.
        }

        return fingerprint;
    }

    /// <summary>
    /// The fingerprint of a model with generated weights (no checkpoint): SHA-256 over the canonical config, the
    /// generator's name and its seed, so chunks of different synthetic models never mix with each other or with a real one.
    /// </summary>
    public static ModelFingerprint ComputeSynthetic(ModelConfig config, string generator, int seed)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentException.ThrowIfNullOrEmpty(generator);
        byte[] digest = SHA256.HashData(Encoding.UTF8.GetBytes($"{CanonicalConfig(config)}\nsynthetic|{generator}|{seed.ToString(CultureInfo.InvariantCulture)}"));
        return new ModelFingerprint(Hash256.Read(digest));
    }

    /// <summary>Hashes the config and every tensor (no cache), on <paramref name="maxParallelism"/> cores (all by default).</summary>
    public static unsafe ModelFingerprint Compute(ModelConfig config, ModelWeights weights, int maxParallelism = -1)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        string[] names = [.. weights.Names.Order(StringComparer.Ordinal)];
        WeightTensor[] tensors = [.. names.Select(weights.Get)];

        // Every 64 MiB block of every tensor, hashed in parallel; the fingerprint hashes the block digests in order.
        var blocks = new List<(int Tensor, long Offset, int Length)>();
        for (int t = 0; t < tensors.Length; t++)
        {
            for (long offset = 0; offset < tensors[t].ByteLength; offset += BlockBytes)
            {
                blocks.Add((t, offset, (int)Math.Min(BlockBytes, tensors[t].ByteLength - offset)));
            }
        }

        byte[] digests = new byte[blocks.Count * SHA256.HashSizeInBytes];
        Parallel.For(0, blocks.Count, new ParallelOptions { MaxDegreeOfParallelism = maxParallelism }, i =>
        {
            (int t, long offset, int length) = blocks[i];
            SHA256.HashData(new ReadOnlySpan<byte>(tensors[t].Data + offset, length), digests.AsSpan(i * SHA256.HashSizeInBytes, SHA256.HashSizeInBytes));
        });

        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Encoding.UTF8.GetBytes(CanonicalConfig(config)));
        int block = 0;
        for (int t = 0; t < tensors.Length; t++)
        {
            WeightTensor tensor = tensors[t];
            hash.AppendData(Encoding.UTF8.GetBytes($"\n{names[t]}|{tensor.DType.ToShortName()}|{string.Join(',', tensor.Shape)}|{tensor.ByteLength}\n"));
            for (long offset = 0; offset < tensor.ByteLength; offset += BlockBytes, block++)
            {
                hash.AppendData(digests.AsSpan(block * SHA256.HashSizeInBytes, SHA256.HashSizeInBytes));
            }
        }

        GC.KeepAlive(weights);
        Span<byte> digest = stackalloc byte[Hash256.Size];
        hash.GetHashAndReset(digest);
        return new ModelFingerprint(Hash256.Read(digest));
    }

    /// <summary>The fields of the config that decide what the model computes, in a fixed text form.</summary>
    internal static string CanonicalConfig(ModelConfig c) => string.Create(CultureInfo.InvariantCulture,
        $"arch={c.Architecture};vocab={c.VocabSize};hidden={c.HiddenSize};ffn={c.IntermediateSize};layers={c.NumLayers};" +
        $"heads={c.NumHeads};kv={c.NumKvHeads};hd={c.HeadDim};maxpos={c.MaxPositionEmbeddings};eps={c.RmsNormEps:R};" +
        $"tie={c.TieWordEmbeddings};qkvbias={c.AttentionBias};obias={c.OutputBias};mlpbias={c.MlpBias};" +
        $"window={c.SlidingWindow};windowlayers={string.Join(',', c.SlidingWindowLayers)};act={c.HiddenAct};" +
        $"rope={c.Rope.Type},{c.Rope.Theta:R},{c.Rope.Factor:R},{c.Rope.LowFreqFactor:R},{c.Rope.HighFreqFactor:R}," +
        $"{c.Rope.OriginalMaxPositionEmbeddings},{c.Rope.AttentionFactor:R},{c.Rope.BetaFast:R},{c.Rope.BetaSlow:R}," +
        $"{c.Rope.Mscale:R},{c.Rope.MscaleAllDim:R},{c.Rope.Truncate}");

    /// <summary>
    /// One line per weight and config file: name, device, inode, size, mtime and ctime (nanoseconds); null where statx
    /// cannot tell (then nothing is cached).
    /// </summary>
    internal static unsafe string? FileStamp(string directory, ModelWeights weights)
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        var lines = new List<string>();
        foreach (string path in weights.Files.Append(Path.Combine(directory, LoadedModel.ConfigFileName)).Order(StringComparer.Ordinal))
        {
            Native.Interop.Libc.StatxBuffer stat = default;
            try
            {
                if (Native.Interop.Libc.Statx(Native.Interop.Libc.AtCurrentDirectory, path, 0, Native.Interop.Libc.BasicStats, &stat) != 0)
                {
                    return null;
                }
            }
            catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
            {
                return null; // a C library without statx (glibc < 2.28, musl < 1.2.5): no cache
            }

            lines.Add(string.Create(CultureInfo.InvariantCulture,
                $"{Path.GetFileName(path)} dev={stat.DeviceMajor}:{stat.DeviceMinor} ino={stat.Inode} size={stat.Size} " +
                $"mtime={stat.ModifySeconds}.{stat.ModifyNanoseconds:D9} ctime={stat.ChangeSeconds}.{stat.ChangeNanoseconds:D9}"));
        }

        return string.Join('\n', lines);
    }

    private static bool TryReadCache(string path, string stamp, out ModelFingerprint fingerprint)
    {
        fingerprint = default;
        try
        {
            if (!File.Exists(path))
            {
                return false;
            }

            string[] lines = File.ReadAllText(path).Split('\n', 3);
            if (lines.Length == 3 && lines[0] == CacheHeader && lines[2] == stamp && Hash256.TryParse(lines[1], out Hash256 value))
            {
                fingerprint = new ModelFingerprint(value);
                return true;
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Unreadable cache: recompute.
        }

        return false;
    }
}
