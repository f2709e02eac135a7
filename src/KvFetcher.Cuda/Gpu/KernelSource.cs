using System.Reflection;
using System.Text;

namespace KvFetcher.Cuda.Gpu;

/// <summary>A CUDA C++ program for NVRTC: its main file and the files it <c>#include</c>s, by name.</summary>
internal sealed class KernelSource
{
    public KernelSource(string name, string text, IReadOnlyList<(string Name, string Text)>? headers = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(text);
        Name = name;
        Text = text;
        Headers = headers ?? [];
    }

    /// <summary>The main file's name (NVRTC's log names it).</summary>
    public string Name { get; }

    public string Text { get; }

    /// <summary>The files the program may include, by the name its <c>#include</c> uses.</summary>
    public IReadOnlyList<(string Name, string Text)> Headers { get; }

    /// <summary>
    /// The program embedded in <paramref name="assembly"/> as resources named <paramref name="prefix"/> + file name:
    /// <paramref name="main"/> and every <c>.cuh</c> under the same prefix.
    /// </summary>
    public static KernelSource Embedded(Assembly assembly, string prefix, string main)
    {
        string Read(string resource)
        {
            using Stream stream = assembly.GetManifestResourceStream(resource)
                ?? throw new InvalidOperationException($"The assembly lacks its embedded resource {resource}.");
            using var reader = new StreamReader(stream, Encoding.UTF8);
            return reader.ReadToEnd();
        }

        List<(string, string)> headers = [.. assembly.GetManifestResourceNames()
            .Where(r => r.StartsWith(prefix, StringComparison.Ordinal) && r.EndsWith(".cuh", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal)
            .Select(r => (r[prefix.Length..], Read(r)))];
        return new KernelSource(main, Read(prefix + main), headers);
    }

    /// <summary>Every file's text, the main file first (for searching the program, not for compiling it).</summary>
    public string AllText => string.Join('\n', [Text, .. Headers.Select(h => h.Text)]);
}
