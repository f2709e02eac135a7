using System.Text.Json;

namespace KvFetcher.Engine.Model;

/// <summary>
/// Typed reads of optional JSON fields for the model's configuration files. A field that is absent or
/// <c>null</c> reads as <see langword="null"/>; a field of the wrong type raises <see cref="InvalidModelException"/>
/// naming the file, the field and the value.
/// </summary>
internal static class JsonFields
{
    public static JsonDocument ParseFile(string path)
    {
        if (!File.Exists(path))
        {
            throw new InvalidModelException(path, "the file does not exist.");
        }

        try
        {
            var options = new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip };
            return JsonDocument.Parse(File.ReadAllBytes(path), options);
        }
        catch (JsonException e)
        {
            throw new InvalidModelException(path, $"the file is not valid JSON: {e.Message}", e);
        }
    }

    public static JsonElement RootObject(JsonDocument document, string path)
    {
        JsonElement root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidModelException(path, $"the file holds a JSON {root.ValueKind}, not an object.");
        }

        return root;
    }

    public static bool TryGet(JsonElement obj, string name, out JsonElement value)
    {
        if (obj.ValueKind == JsonValueKind.Object
            && obj.TryGetProperty(name, out value)
            && value.ValueKind is not (JsonValueKind.Null or JsonValueKind.Undefined))
        {
            return true;
        }

        value = default;
        return false;
    }

    public static int? Int(JsonElement obj, string name, string path, string field)
    {
        if (!TryGet(obj, name, out JsonElement value))
        {
            return null;
        }

        if (value.ValueKind == JsonValueKind.Number)
        {
            if (value.TryGetInt32(out int result))
            {
                return result;
            }

            // Some writers emit integral values as 4096.0.
            if (value.TryGetDouble(out double real) && real == Math.Floor(real) && real is >= int.MinValue and <= int.MaxValue)
            {
                return (int)real;
            }
        }

        throw new InvalidModelException(path, $"field '{field}' is {Describe(value)}, not a 32-bit integer.");
    }

    public static int RequiredInt(JsonElement obj, string name, string path, string field) =>
        Int(obj, name, path, field) ?? throw Missing(path, field);

    public static double? Double(JsonElement obj, string name, string path, string field)
    {
        if (!TryGet(obj, name, out JsonElement value))
        {
            return null;
        }

        if (value.ValueKind == JsonValueKind.Number && value.TryGetDouble(out double result) && double.IsFinite(result))
        {
            return result;
        }

        throw new InvalidModelException(path, $"field '{field}' is {Describe(value)}, not a finite number.");
    }

    public static bool? Bool(JsonElement obj, string name, string path, string field)
    {
        if (!TryGet(obj, name, out JsonElement value))
        {
            return null;
        }

        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new InvalidModelException(path, $"field '{field}' is {Describe(value)}, not true or false."),
        };
    }

    public static string? String(JsonElement obj, string name, string path, string field)
    {
        if (!TryGet(obj, name, out JsonElement value))
        {
            return null;
        }

        return value.ValueKind == JsonValueKind.String
            ? value.GetString()!
            : throw new InvalidModelException(path, $"field '{field}' is {Describe(value)}, not a string.");
    }

    public static InvalidModelException Missing(string path, string field) =>
        new(path, $"required field '{field}' is missing.");

    /// <summary>The value as it appears in the file, shortened for messages.</summary>
    public static string Describe(JsonElement value)
    {
        string text = value.GetRawText();
        return text.Length <= 80 ? text : string.Concat(text.AsSpan(0, 77), "...");
    }
}
