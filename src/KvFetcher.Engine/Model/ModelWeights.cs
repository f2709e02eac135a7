using System.Collections.ObjectModel;
using System.Diagnostics.CodeAnalysis;
using System.Text.Json;

namespace KvFetcher.Engine.Model;

/// <summary>
/// The weights of a Hugging Face model directory: one <c>model.safetensors</c>, or the shards listed by
/// <c>model.safetensors.index.json</c>, each memory-mapped once. Tensors stay valid until <see cref="Dispose"/>.
/// </summary>
public sealed class ModelWeights : IDisposable
{
    /// <summary>The shard index file name.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    /// <summary>The single-file weights name.</summary>
    public const string SingleFileName = "model.safetensors";

    private readonly SafeTensorsFile[] _files;
    private readonly Dictionary<string, SafeTensorsFile> _fileByTensor;
    private readonly ReadOnlyCollection<string> _names;
    private readonly ReadOnlyCollection<string> _filePaths;
    private int _disposed;

    private ModelWeights(string directory, SafeTensorsFile[] files, Dictionary<string, SafeTensorsFile> fileByTensor, string[] names)
    {
        Directory = directory;
        _files = files;
        _fileByTensor = fileByTensor;
        _names = Array.AsReadOnly(names);
        _filePaths = Array.AsReadOnly(files.Select(f => f.FilePath).ToArray());
    }

    /// <summary>The model directory (full path).</summary>
    public string Directory { get; }

    /// <summary>Every tensor name (for a sharded model, the names of the index's <c>weight_map</c>).</summary>
    public IReadOnlyCollection<string> Names => _names;

    /// <summary>Full paths of the safetensors files in use.</summary>
    public IReadOnlyList<string> Files => _filePaths;

    /// <summary>
    /// Opens the weights of <paramref name="modelDirectory"/>: <c>model.safetensors.index.json</c> when present, else
    /// <c>model.safetensors</c>, else the directory's only <c>*.safetensors</c> file.
    /// </summary>
    /// <exception cref="InvalidModelException">No weights, a missing or invalid shard, or an index entry that its
    /// shard does not hold.</exception>
    public static ModelWeights Open(string modelDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelDirectory);
        string directory = Path.GetFullPath(modelDirectory);
        if (!System.IO.Directory.Exists(directory))
        {
            throw new InvalidModelException(directory, "the model directory does not exist.");
        }

        string indexPath = Path.Combine(directory, IndexFileName);
        if (File.Exists(indexPath))
        {
            return OpenSharded(directory, indexPath);
        }

        string single = Path.Combine(directory, SingleFileName);
        if (!File.Exists(single))
        {
            string[] candidates = System.IO.Directory.GetFiles(directory, "*.safetensors");
            if (candidates.Length == 0)
            {
                throw new InvalidModelException(
                    directory, $"the model directory has no weights: neither {IndexFileName}, {SingleFileName} nor any *.safetensors file.");
            }

            if (candidates.Length > 1)
            {
                Array.Sort(candidates, StringComparer.Ordinal);
                throw new InvalidModelException(
                    directory,
                    $"the model directory has {candidates.Length} *.safetensors files ({string.Join(", ", candidates.Select(Path.GetFileName))}) " +
                    $"but no {IndexFileName} saying which tensor is in which.");
            }

            single = candidates[0];
        }

        SafeTensorsFile file = SafeTensorsFile.Open(single);
        var byTensor = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        foreach (string name in file.Names)
        {
            byTensor.Add(name, file);
        }

        return new ModelWeights(directory, [file], byTensor, [.. file.Names]);
    }

    /// <summary>Looks up a weight tensor (F32, F16 or BF16).</summary>
    public bool TryGet(string name, [MaybeNullWhen(false)] out WeightTensor tensor)
    {
        ArgumentNullException.ThrowIfNull(name);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (_fileByTensor.TryGetValue(name, out SafeTensorsFile? file))
        {
            return file.TryGet(name, out tensor);
        }

        tensor = null;
        return false;
    }

    /// <summary>Returns weight tensor <paramref name="name"/>.</summary>
    /// <exception cref="InvalidModelException">No file holds it, or it is not F32/F16/BF16.</exception>
    public WeightTensor Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (!_fileByTensor.TryGetValue(name, out SafeTensorsFile? file))
        {
            throw new InvalidModelException(
                _files.Length == 1 ? _files[0].FilePath : Path.Combine(Directory, IndexFileName),
                $"the model's weights have no tensor named '{name}'.");
        }

        return file.Get(name);
    }

    /// <summary>The full path of the file that holds tensor <paramref name="name"/>, or <see langword="null"/>.</summary>
    public string? FileOf(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _fileByTensor.TryGetValue(name, out SafeTensorsFile? file) ? file.FilePath : null;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        foreach (SafeTensorsFile file in _files)
        {
            file.Dispose();
        }
    }

    private static ModelWeights OpenSharded(string directory, string indexPath)
    {
        List<(string Tensor, string Shard)> weightMap = ReadIndex(indexPath);
        var shards = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        try
        {
            var byTensor = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
            var names = new List<string>(weightMap.Count);
            foreach ((string tensor, string shard) in weightMap)
            {
                if (!shards.TryGetValue(shard, out SafeTensorsFile? file))
                {
                    string shardPath = Path.Combine(directory, shard);
                    if (!File.Exists(shardPath))
                    {
                        throw new InvalidModelException(
                            shardPath, $"this shard, which {IndexFileName} names for tensor '{tensor}', does not exist.");
                    }

                    file = SafeTensorsFile.Open(shardPath);
                    shards.Add(shard, file);
                }

                if (!file.Contains(tensor))
                {
                    throw new InvalidModelException(
                        file.FilePath, $"the shard has no tensor '{tensor}', which {IndexFileName} says it holds.");
                }

                byTensor.Add(tensor, file);
                names.Add(tensor);
            }

            SafeTensorsFile[] files = [.. shards.Values.OrderBy(f => f.FilePath, StringComparer.Ordinal)];
            return new ModelWeights(directory, files, byTensor, [.. names]);
        }
        catch
        {
            foreach (SafeTensorsFile file in shards.Values)
            {
                file.Dispose();
            }

            throw;
        }
    }

    private static List<(string Tensor, string Shard)> ReadIndex(string indexPath)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllBytes(indexPath));
        }
        catch (JsonException e)
        {
            throw new InvalidModelException(indexPath, $"the file is not valid JSON: {e.Message}", e);
        }

        using (document)
        {
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object
                || !root.TryGetProperty("weight_map", out JsonElement map)
                || map.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidModelException(indexPath, "field 'weight_map' is missing or not an object.");
            }

            var result = new List<(string, string)>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (JsonProperty entry in map.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String)
                {
                    throw new InvalidModelException(
                        indexPath, $"field 'weight_map' entry '{entry.Name}' is a {entry.Value.ValueKind}, not a file name.");
                }

                string shard = entry.Value.GetString()!;
                if (shard.Length == 0
                    || shard != Path.GetFileName(shard)
                    || shard is "." or ".."
                    || shard.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0
                    || shard.Contains('\\', StringComparison.Ordinal))
                {
                    throw new InvalidModelException(
                        indexPath, $"field 'weight_map' entry '{entry.Name}' is '{shard}', which is not a file name inside the model directory.");
                }

                if (!seen.Add(entry.Name))
                {
                    throw new InvalidModelException(indexPath, $"field 'weight_map' lists tensor '{entry.Name}' twice.");
                }

                result.Add((entry.Name, shard));
            }

            if (result.Count == 0)
            {
                throw new InvalidModelException(indexPath, "field 'weight_map' is empty.");
            }

            return result;
        }
    }
}
