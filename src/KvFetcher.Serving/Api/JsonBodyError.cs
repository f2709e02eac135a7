using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace KvFetcher.Serving.Api;

/// <summary>
/// Turns the serializer's <see cref="JsonException"/> for a request body into an OpenAI error that names the field in
/// <c>param</c> (its JSON path without the leading <c>$.</c>, e.g. <c>messages[0].role</c>) and says what was expected
/// in plain words ("an integer", "an array"), never a .NET type name.
/// </summary>
internal static class JsonBodyError
{
    public static ApiError From(JsonException exception, JsonTypeInfo body)
    {
        string? param = Param(exception.Path);
        // The reader's own exception (a subclass) is a syntax error; the serializer's plain one a value of the wrong type.
        if (exception.GetType() != typeof(JsonException))
        {
            string at = param is null ? "" : $" (at '{param}')";
            return ApiError.Invalid($"The request body is not valid JSON{at}: {exception.Message}", param);
        }

        if (param is null)
        {
            return ApiError.Invalid($"The request body must be {Expected(body)}.");
        }

        return Find(body, exception.Path!) is { } field
            ? ApiError.Invalid($"'{param}' must be {Expected(field)}.", param)
            : ApiError.Invalid($"'{param}' has a value of the wrong type or shape.", param);
    }

    /// <summary><c>$.a[0].b</c> → <c>a[0].b</c>; null for the whole body.</summary>
    private static string? Param(string? path)
    {
        if (string.IsNullOrEmpty(path) || path == "$")
        {
            return null;
        }

        return path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : path[1..];
    }

    /// <summary>The type at <paramref name="path"/> below <paramref name="root"/> (<c>.name</c>, <c>['name']</c>, <c>[3]</c> steps), or null.</summary>
    private static JsonTypeInfo? Find(JsonTypeInfo root, string path)
    {
        JsonTypeInfo current = root;
        int i = 1; // past '$'
        while (i < path.Length)
        {
            string? name;
            if (path[i] == '.')
            {
                int end = path.IndexOfAny(['.', '['], i + 1);
                end = end < 0 ? path.Length : end;
                name = path[(i + 1)..end];
                i = end;
            }
            else if (path.AsSpan(i).StartsWith("['"))
            {
                int end = path.IndexOf("']", i, StringComparison.Ordinal);
                if (end < 0)
                {
                    return null;
                }

                name = path[(i + 2)..end];
                i = end + 2;
            }
            else if (path[i] == '[')
            {
                int end = path.IndexOf(']', i);
                if (end < 0 || current.ElementType is not { } element)
                {
                    return null;
                }

                current = current.Options.GetTypeInfo(element);
                i = end + 1;
                continue;
            }
            else
            {
                return null;
            }

            JsonPropertyInfo? property = current.Properties.FirstOrDefault(p => p.Name == name);
            if (property is null)
            {
                return null;
            }

            current = current.Options.GetTypeInfo(property.PropertyType);
        }

        return current;
    }

    private static string Expected(JsonTypeInfo type)
    {
        Type clr = Nullable.GetUnderlyingType(type.Type) ?? type.Type;
        return clr switch
        {
            _ when clr == typeof(int) => "an integer from -2147483648 to 2147483647",
            _ when clr == typeof(long) => "an integer",
            _ when clr == typeof(float) || clr == typeof(double) => "a number",
            _ when clr == typeof(bool) => "true or false",
            _ when clr == typeof(string) => "a string",
            _ when clr == typeof(JsonElement) => "a JSON value",
            _ => type.Kind switch
            {
                JsonTypeInfoKind.Enumerable => "an array",
                JsonTypeInfoKind.Object or JsonTypeInfoKind.Dictionary => "an object",
                _ => "a value of another type",
            },
        };
    }
}
