using System.Buffers.Binary;
using System.Collections.ObjectModel;
using System.Diagnostics.CodeAnalysis;
using System.IO.MemoryMappedFiles;
using System.Text.Json;
using KvFetcher.Core;

namespace KvFetcher.Engine.Model;

/// <summary>
/// A memory-mapped <c>.safetensors</c> file: an 8-byte little-endian header length, a JSON header that maps tensor
/// names to <c>dtype</c>, <c>shape</c> and <c>data_offsets</c> (relative to the data section that follows the
/// header), then the tensor bytes. The header is validated in full when the file is opened; tensors are views into
/// the mapping and stay valid until <see cref="Dispose"/>.
/// </summary>
/// <remarks>
/// F32, F16 and BF16 tensors are weights (<see cref="Get"/>, <see cref="TryGet"/>); I32 and I64 tensors are accepted
/// and readable through <see cref="GetRawBytes"/> only. Any other dtype is rejected when the file is opened.
/// </remarks>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    /// <summary>The largest header accepted (the reference implementation's limit).</summary>
    public const long MaxHeaderLength = 100_000_000;

    private const string MetadataKey = "__metadata__";

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _data;
    private readonly Dictionary<string, Entry> _entries;
    private readonly ReadOnlyCollection<string> _names;
    private readonly ReadOnlyDictionary<string, string> _metadata;
    private int _disposed;

    private SafeTensorsFile(
        string filePath,
        MemoryMappedFile map,
        MemoryMappedViewAccessor view,
        byte* data,
        long dataLength,
        Dictionary<string, Entry> entries,
        string[] names,
        Dictionary<string, string> metadata)
    {
        FilePath = filePath;
        _map = map;
        _view = view;
        _data = data;
        DataLength = dataLength;
        _entries = entries;
        _names = Array.AsReadOnly(names);
        _metadata = new ReadOnlyDictionary<string, string>(metadata);
    }

    /// <summary>The full path of the file.</summary>
    public string FilePath { get; }

    /// <summary>Bytes in the data section (after the header).</summary>
    public long DataLength { get; }

    /// <summary>All tensor names in header order, including I32/I64 tensors.</summary>
    public IReadOnlyCollection<string> Names => _names;

    /// <summary>The string pairs of the header's <c>__metadata__</c> entry (empty when it has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata => _metadata;

    /// <summary>Maps <paramref name="path"/> read-only and validates its header.</summary>
    /// <exception cref="InvalidModelException">The file is missing, truncated or its header is invalid.</exception>
    public static SafeTensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string fullPath = Path.GetFullPath(path);
        if (!File.Exists(fullPath))
        {
            throw new InvalidModelException(fullPath, "the safetensors file does not exist.");
        }

        var stream = new FileStream(fullPath, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1);
        long fileLength = stream.Length;
        if (fileLength < sizeof(ulong))
        {
            stream.Dispose();
            throw new InvalidModelException(
                fullPath,
                $"the file is truncated: it has {fileLength} bytes, fewer than the 8-byte header length at offset 0.");
        }

        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        bool pointerAcquired = false;
        try
        {
            map = MemoryMappedFile.CreateFromFile(
                stream, mapName: null, capacity: 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            pointerAcquired = true;
            byte* start = pointer + view.PointerOffset;

            SafeTensorsFile file = Parse(fullPath, map, view, start, fileLength);
            return file;
        }
        catch
        {
            if (pointerAcquired)
            {
                view!.SafeMemoryMappedViewHandle.ReleasePointer();
            }

            view?.Dispose();
            if (map is null)
            {
                stream.Dispose();
            }
            else
            {
                map.Dispose();
            }

            throw;
        }
    }

    /// <summary>Looks up a weight tensor (F32, F16 or BF16).</summary>
    /// <returns><see langword="false"/> when there is no tensor of that name or it is an I32/I64 tensor.</returns>
    public bool TryGet(string name, [MaybeNullWhen(false)] out WeightTensor tensor)
    {
        ArgumentNullException.ThrowIfNull(name);
        ThrowIfDisposed();
        if (_entries.TryGetValue(name, out Entry entry) && entry.Weight is not null)
        {
            tensor = entry.Weight;
            return true;
        }

        tensor = null;
        return false;
    }

    /// <summary>Returns the weight tensor <paramref name="name"/>.</summary>
    /// <exception cref="InvalidModelException">The file has no such tensor, or it is not F32/F16/BF16.</exception>
    public WeightTensor Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        ThrowIfDisposed();
        if (!_entries.TryGetValue(name, out Entry entry))
        {
            throw new InvalidModelException(FilePath, $"the file has no tensor named '{name}'.");
        }

        return entry.Weight ?? throw new InvalidModelException(
            FilePath,
            $"tensor '{name}' has dtype {entry.DTypeName}, which is not a weight dtype (F32, F16, BF16); read it with {nameof(GetRawBytes)}.");
    }

    /// <summary>Whether the file holds a tensor (of any accepted dtype) named <paramref name="name"/>.</summary>
    public bool Contains(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _entries.ContainsKey(name);
    }

    /// <summary>
    /// The little-endian bytes of tensor <paramref name="name"/> of any accepted dtype (this is how I32 and I64
    /// tensors are read), with its safetensors dtype name (<c>I32</c>, <c>I64</c>, <c>F32</c>, ...) and shape.
    /// </summary>
    /// <exception cref="InvalidModelException">The file has no such tensor.</exception>
    public ReadOnlySpan<byte> GetRawBytes(string name, out string dtype, out int[] shape)
    {
        ArgumentNullException.ThrowIfNull(name);
        ThrowIfDisposed();
        if (!_entries.TryGetValue(name, out Entry entry))
        {
            throw new InvalidModelException(FilePath, $"the file has no tensor named '{name}'.");
        }

        long length = entry.End - entry.Begin;
        if (length > int.MaxValue)
        {
            throw new NotSupportedException($"{FilePath}: tensor '{name}' has {length} bytes, more than one span can hold.");
        }

        dtype = entry.DTypeName;
        shape = (int[])entry.Shape.Clone();
        return new ReadOnlySpan<byte>(_data + entry.Begin, (int)length);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }

    public override string ToString() => $"{FilePath} ({_entries.Count} tensors)";

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    private static SafeTensorsFile Parse(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* start, long fileLength)
    {
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(start, sizeof(ulong)));
        long available = fileLength - sizeof(ulong);
        if (headerLength > (ulong)available)
        {
            throw new InvalidModelException(
                path,
                $"the header length at offset 0 is {headerLength} bytes, but only {available} bytes follow it " +
                $"(file size {fileLength}): the file is truncated or is not a safetensors file.");
        }

        if (headerLength > MaxHeaderLength)
        {
            throw new InvalidModelException(
                path, $"the header length at offset 0 is {headerLength} bytes, more than the {MaxHeaderLength} accepted.");
        }

        if (headerLength < 2)
        {
            throw new InvalidModelException(path, $"the header length at offset 0 is {headerLength} bytes, too short for a JSON object.");
        }

        long dataOffset = sizeof(ulong) + (long)headerLength;
        long dataLength = fileLength - dataOffset;
        byte[] headerBytes = new ReadOnlySpan<byte>(start + sizeof(ulong), (int)headerLength).ToArray();

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(headerBytes);
        }
        catch (JsonException e)
        {
            throw new InvalidModelException(
                path,
                $"the JSON header (file bytes 8 to {dataOffset}) is malformed: {e.Message}",
                e);
        }

        using (document)
        {
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidModelException(path, $"the JSON header is a {root.ValueKind}, not an object.");
            }

            var entries = new Dictionary<string, Entry>(StringComparer.Ordinal);
            var names = new List<string>();
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            foreach (JsonProperty property in root.EnumerateObject())
            {
                if (property.Name == MetadataKey)
                {
                    if (sawMetadata)
                    {
                        throw new InvalidModelException(path, $"the header has two '{MetadataKey}' entries.");
                    }

                    sawMetadata = true;
                    ReadMetadata(path, property.Value, metadata);
                    continue;
                }

                if (entries.ContainsKey(property.Name))
                {
                    throw new InvalidModelException(path, $"the header lists tensor '{property.Name}' twice.");
                }

                Entry entry = ReadEntry(path, property.Name, property.Value, dataLength);
                entries.Add(property.Name, entry);
                names.Add(property.Name);
            }

            CheckOverlaps(path, entries);

            var file = new SafeTensorsFile(path, map, view, start + dataOffset, dataLength, entries, [.. names], metadata);
            foreach (string name in names)
            {
                Entry entry = entries[name];
                if (entry.DType is DType dtype)
                {
                    entries[name] = entry with
                    {
                        Weight = new WeightTensor(name, dtype, entry.Shape, start + dataOffset + entry.Begin, entry.End - entry.Begin, file),
                    };
                }
            }

            return file;
        }
    }

    private static void ReadMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidModelException(path, $"'{MetadataKey}' is a {value.ValueKind}, not an object of strings.");
        }

        foreach (JsonProperty item in value.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
            {
                throw new InvalidModelException(
                    path, $"'{MetadataKey}' entry '{item.Name}' is a {item.Value.ValueKind}, not a string.");
            }

            if (!metadata.TryAdd(item.Name, item.Value.GetString()!))
            {
                throw new InvalidModelException(path, $"'{MetadataKey}' lists key '{item.Name}' twice.");
            }
        }
    }

    private static Entry ReadEntry(string path, string name, JsonElement value, long dataLength)
    {
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidModelException(path, $"tensor '{name}': the header entry is a {value.ValueKind}, not an object.");
        }

        if (!value.TryGetProperty("dtype", out JsonElement dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
        {
            throw new InvalidModelException(path, $"tensor '{name}': field 'dtype' is missing or not a string.");
        }

        string dtypeName = dtypeElement.GetString()!;
        DType? dtype;
        int elementSize;
        switch (dtypeName)
        {
            case "F32":
                dtype = DType.Float32;
                elementSize = 4;
                break;
            case "F16":
                dtype = DType.Float16;
                elementSize = 2;
                break;
            case "BF16":
                dtype = DType.BFloat16;
                elementSize = 2;
                break;
            case "I32":
                dtype = null;
                elementSize = 4;
                break;
            case "I64":
                dtype = null;
                elementSize = 8;
                break;
            default:
                throw new InvalidModelException(
                    path,
                    $"tensor '{name}': field 'dtype' is '{dtypeName}', which is not supported " +
                    "(weights: F32, F16, BF16; I32 and I64 as raw bytes).");
        }

        if (!value.TryGetProperty("shape", out JsonElement shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
        {
            throw new InvalidModelException(path, $"tensor '{name}': field 'shape' is missing or not an array.");
        }

        int[] shape = new int[shapeElement.GetArrayLength()];
        long elements = 1;
        int dim = 0;
        foreach (JsonElement item in shapeElement.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out int size) || size < 0)
            {
                throw new InvalidModelException(
                    path, $"tensor '{name}': field 'shape' entry {dim} is {item.GetRawText()}, not an integer in [0, {int.MaxValue}].");
            }

            shape[dim++] = size;
            elements = MultiplyOrFail(path, name, elements, size);
        }

        if (!value.TryGetProperty("data_offsets", out JsonElement offsetsElement)
            || offsetsElement.ValueKind != JsonValueKind.Array
            || offsetsElement.GetArrayLength() != 2)
        {
            throw new InvalidModelException(path, $"tensor '{name}': field 'data_offsets' is missing or not an array of two integers.");
        }

        long begin = ReadOffset(path, name, offsetsElement[0]);
        long end = ReadOffset(path, name, offsetsElement[1]);
        if (begin > end)
        {
            throw new InvalidModelException(path, $"tensor '{name}': field 'data_offsets' is [{begin}, {end}]: begin is after end.");
        }

        if (end > dataLength)
        {
            throw new InvalidModelException(
                path,
                $"tensor '{name}': field 'data_offsets' is [{begin}, {end}], which ends beyond the {dataLength}-byte data section " +
                "(the file is truncated or the header is corrupt).");
        }

        long byteLength = MultiplyOrFail(path, name, elements, elementSize);
        if (byteLength != end - begin)
        {
            throw new InvalidModelException(
                path,
                $"tensor '{name}': dtype {dtypeName} and shape [{string.Join(", ", shape)}] need {byteLength} bytes, " +
                $"but field 'data_offsets' [{begin}, {end}] spans {end - begin}.");
        }

        return new Entry(dtypeName, dtype, shape, begin, end, Weight: null);
    }

    private static long ReadOffset(string path, string name, JsonElement element)
    {
        if (element.ValueKind != JsonValueKind.Number || !element.TryGetInt64(out long offset) || offset < 0)
        {
            throw new InvalidModelException(
                path, $"tensor '{name}': field 'data_offsets' holds {element.GetRawText()}, not a non-negative integer.");
        }

        return offset;
    }

    private static long MultiplyOrFail(string path, string name, long a, long b)
    {
        try
        {
            return checked(a * b);
        }
        catch (OverflowException e)
        {
            throw new InvalidModelException(path, $"tensor '{name}': the size of field 'shape' overflows 64 bits.", e);
        }
    }

    private static void CheckOverlaps(string path, Dictionary<string, Entry> entries)
    {
        var ordered = new List<KeyValuePair<string, Entry>>(entries);
        ordered.Sort(static (x, y) =>
        {
            int byBegin = x.Value.Begin.CompareTo(y.Value.Begin);
            return byBegin != 0 ? byBegin : x.Value.End.CompareTo(y.Value.End);
        });

        string? previousName = null;
        long previousBegin = 0;
        long previousEnd = 0;
        foreach ((string name, Entry entry) in ordered)
        {
            if (entry.Begin == entry.End)
            {
                continue;
            }

            if (previousName is not null && entry.Begin < previousEnd)
            {
                throw new InvalidModelException(
                    path,
                    $"tensors '{previousName}' (data_offsets [{previousBegin}, {previousEnd}]) and '{name}' " +
                    $"(data_offsets [{entry.Begin}, {entry.End}]) overlap.");
            }

            if (previousName is null || entry.End > previousEnd)
            {
                previousName = name;
                previousBegin = entry.Begin;
                previousEnd = entry.End;
            }
        }
    }

    private readonly record struct Entry(string DTypeName, DType? DType, int[] Shape, long Begin, long End, WeightTensor? Weight);
}
