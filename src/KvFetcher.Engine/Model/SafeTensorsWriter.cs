using System.Buffers;
using System.Buffers.Binary;
using System.Text.Json;
using KvFetcher.Core;

namespace KvFetcher.Engine.Model;

/// <summary>
/// Writes <c>.safetensors</c> files: the tensors' bytes are laid out back to back in the order given, and the JSON
/// header is padded with spaces so that the data section starts at a multiple of 8 bytes.
/// </summary>
public static class SafeTensorsWriter
{
    private const int Alignment = 8;

    /// <summary>
    /// Writes <paramref name="tensors"/> (and optional string <paramref name="metadata"/>) to <paramref name="path"/>.
    /// The file is written beside the target and moved into place, so a reader never sees a partial file.
    /// </summary>
    /// <exception cref="ArgumentException">A name is empty, reserved or repeated, a dimension is negative, or a
    /// tensor's data length does not match its shape and dtype.</exception>
    public static void Write(
        string path,
        IEnumerable<(string Name, DType DType, int[] Shape, ReadOnlyMemory<byte> Data)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(tensors);

        var list = tensors.ToList();
        byte[] header = BuildHeader(list, metadata);

        string fullPath = Path.GetFullPath(path);
        string temporaryPath = fullPath + ".tmp-" + Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        try
        {
            using (var stream = new FileStream(temporaryPath, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 1 << 16))
            {
                Span<byte> lengthPrefix = stackalloc byte[sizeof(ulong)];
                BinaryPrimitives.WriteUInt64LittleEndian(lengthPrefix, (ulong)header.Length);
                stream.Write(lengthPrefix);
                stream.Write(header);
                foreach ((_, _, _, ReadOnlyMemory<byte> data) in list)
                {
                    stream.Write(data.Span);
                }

                stream.Flush(flushToDisk: false);
            }

            File.Move(temporaryPath, fullPath, overwrite: true);
        }
        catch
        {
            if (File.Exists(temporaryPath))
            {
                File.Delete(temporaryPath);
            }

            throw;
        }
    }

    private static byte[] BuildHeader(
        List<(string Name, DType DType, int[] Shape, ReadOnlyMemory<byte> Data)> tensors,
        IReadOnlyDictionary<string, string>? metadata)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            if (metadata is not null && metadata.Count > 0)
            {
                writer.WriteStartObject("__metadata__");
                foreach (KeyValuePair<string, string> pair in metadata)
                {
                    writer.WriteString(pair.Key, pair.Value);
                }

                writer.WriteEndObject();
            }

            var seen = new HashSet<string>(StringComparer.Ordinal);
            long offset = 0;
            foreach ((string name, DType dtype, int[] shape, ReadOnlyMemory<byte> data) in tensors)
            {
                ArgumentException.ThrowIfNullOrEmpty(name, nameof(tensors));
                ArgumentNullException.ThrowIfNull(shape, nameof(tensors));
                if (name == "__metadata__" || !seen.Add(name))
                {
                    throw new ArgumentException($"Tensor name '{name}' is reserved or repeated.", nameof(tensors));
                }

                long expected = dtype.SizeOf();
                foreach (int size in shape)
                {
                    if (size < 0)
                    {
                        throw new ArgumentException($"Tensor '{name}' has a negative dimension: [{string.Join(", ", shape)}].", nameof(tensors));
                    }

                    expected = checked(expected * size);
                }

                if (expected != data.Length)
                {
                    throw new ArgumentException(
                        $"Tensor '{name}' ({dtype.ToShortName()} [{string.Join(", ", shape)}]) needs {expected} bytes but has {data.Length}.",
                        nameof(tensors));
                }

                writer.WriteStartObject(name);
                writer.WriteString("dtype", ToSafeTensorsName(dtype));
                writer.WriteStartArray("shape");
                foreach (int size in shape)
                {
                    writer.WriteNumberValue(size);
                }

                writer.WriteEndArray();
                writer.WriteStartArray("data_offsets");
                writer.WriteNumberValue(offset);
                writer.WriteNumberValue(offset + data.Length);
                writer.WriteEndArray();
                writer.WriteEndObject();
                offset += data.Length;
            }

            writer.WriteEndObject();
        }

        int length = buffer.WrittenCount;
        int padded = (int)((sizeof(ulong) + length + Alignment - 1) / Alignment * Alignment) - sizeof(ulong);
        byte[] header = new byte[padded];
        buffer.WrittenSpan.CopyTo(header);
        header.AsSpan(length).Fill((byte)' ');
        return header;
    }

    /// <summary>The safetensors name of <paramref name="dtype"/>: F32, F16 or BF16.</summary>
    public static string ToSafeTensorsName(DType dtype) => dtype switch
    {
        DType.Float32 => "F32",
        DType.Float16 => "F16",
        DType.BFloat16 => "BF16",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown dtype."),
    };
}
