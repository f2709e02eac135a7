using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using KvFetcher.Core;
using KvFetcher.Core.Keys;

namespace KvFetcher.Engine.Model;

/// <summary>
/// Computes a model's <see cref="ModelFingerprint"/>: SHA-256 over a canonical form of the architecture config and,
/// for every tensor in name order, its name, dtype, shape and bytes. The result is cached next to the model in
/// <see cref="CacheFileName"/>, valid while the weight and config files keep their sizes and modification times;
/// a read-only model directory just means the fingerprint is recomputed at each load.
/// </summary>
public static class ModelFingerprinter
{
    /// <summary>The cache file written into the model directory.</summary>
    public const string CacheFileName = "kvfetch.fingerprint";

    private const string CacheHeader = "kvfetch-fingerprint v1";

    /// <summary>The fingerprint of <paramref name="model"/>, from the cache file when it is still valid.</summary>
    public static ModelFingerprint Get(LoadedModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        string cachePath = Path.Combine(model.Directory, CacheFileName);
        string stamp = FileStamp(model);
        if (TryReadCache(cachePath, stamp, out ModelFingerprint cached))
        {
            return cached;
        }

        ModelFingerprint fingerprint = Compute(model.Config, model.Weights);
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

    /// <summary>Hashes the config and every tensor (no cache).</summary>
    public static unsafe ModelFingerprint Compute(ModelConfig config, ModelWeights weights)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Encoding.UTF8.GetBytes(CanonicalConfig(config)));
        foreach (string name in weights.Names.Order(StringComparer.Ordinal))
        {
            WeightTensor tensor = weights.Get(name);
            hash.AppendData(Encoding.UTF8.GetBytes($"\n{name}|{tensor.DType.ToShortName()}|{string.Join(',', tensor.Shape)}|{tensor.ByteLength}\n"));
            const int Slice = 1 << 20;
            for (long offset = 0; offset < tensor.ByteLength; offset += Slice)
            {
                int length = (int)Math.Min(Slice, tensor.ByteLength - offset);
                hash.AppendData(new ReadOnlySpan<byte>(tensor.Data + offset, length));
            }

            GC.KeepAlive(tensor);
        }

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

    private static string FileStamp(LoadedModel model)
    {
        var lines = new List<string>();
        foreach (string path in model.Weights.Files.Append(Path.Combine(model.Directory, LoadedModel.ConfigFileName)).Order(StringComparer.Ordinal))
        {
            var info = new FileInfo(path);
            lines.Add(string.Create(CultureInfo.InvariantCulture, $"{info.Name} {info.Length} {info.LastWriteTimeUtc.Ticks}"));
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
