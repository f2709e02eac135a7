using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

[assembly: DisableRuntimeMarshalling]

namespace KvFetcher.Cuda.Native;

/// <summary>
/// Finds the NVIDIA libraries under their versioned file names (<c>libcublas.so.13</c>, <c>libnvrtc.so.12</c>, ...)
/// for the assembly's <c>[LibraryImport]</c>s, and explains a library that cannot be loaded.
/// </summary>
internal static class NativeLibraries
{
    public const string Cuda = "kvf-cuda";
    public const string Cublas = "kvf-cublas";
    public const string Nvrtc = "kvf-nvrtc";
    public const string Nvcuvid = "kvf-nvcuvid";

    private static readonly Dictionary<string, string[]> s_candidates = new(StringComparer.Ordinal)
    {
        [Cuda] = ["libcuda.so.1", "libcuda.so"],
        [Cublas] = ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"],
        [Nvrtc] = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"],
        [Nvcuvid] = ["libnvcuvid.so.1", "libnvcuvid.so"],
    };

    private static readonly Dictionary<string, IntPtr> s_loaded = new(StringComparer.Ordinal);
    private static readonly Lock s_lock = new();

    /// <summary>Registers the resolver before any of the assembly's native calls binds.</summary>
    [ModuleInitializer]
    [SuppressMessage("Usage", "CA2255:The ModuleInitializer attribute should not be used in libraries", Justification = "The resolver must be in place before any of the assembly's native calls binds, whichever runs first.")]
    internal static void Register() => NativeLibrary.SetDllImportResolver(typeof(NativeLibraries).Assembly, Resolve);

    /// <summary>Loads library <paramref name="name"/> (one of the constants) or explains why it cannot be loaded.</summary>
    public static bool TryLoad(string name, out string? problem)
    {
        lock (s_lock)
        {
            if (s_loaded.TryGetValue(name, out IntPtr loaded) && loaded != IntPtr.Zero)
            {
                problem = null;
                return true;
            }

            string[] candidates = s_candidates[name];
            var tried = new List<string>();
            foreach (string candidate in Paths(candidates))
            {
                tried.Add(candidate);
                if (NativeLibrary.TryLoad(candidate, out IntPtr handle))
                {
                    s_loaded[name] = handle;
                    problem = null;
                    return true;
                }
            }

            problem = Explain(name, tried);
            return false;
        }
    }

    /// <summary>Loads library <paramref name="name"/> or throws <see cref="CudaUnavailableException"/> with the checklist.</summary>
    public static void Require(string name)
    {
        if (!TryLoad(name, out string? problem))
        {
            throw new CudaUnavailableException(problem!);
        }
    }

    private static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (!s_candidates.ContainsKey(libraryName))
        {
            return IntPtr.Zero;
        }

        // Returning zero lets the runtime's own probing fail with a DllNotFoundException; callers that want the
        // checklist go through Require first (CudaContext does, for all three libraries).
        return TryLoad(libraryName, out _) ? s_loaded[libraryName] : IntPtr.Zero;
    }

    private static IEnumerable<string> Paths(string[] fileNames)
    {
        // The loader's own search (LD_LIBRARY_PATH, ldconfig cache) first, then the usual toolkit folders.
        foreach (string file in fileNames)
        {
            yield return file;
        }

        var folders = new List<string>();
        string? cudaPath = Environment.GetEnvironmentVariable("CUDA_PATH") ?? Environment.GetEnvironmentVariable("CUDA_HOME");
        if (!string.IsNullOrEmpty(cudaPath))
        {
            folders.Add(Path.Combine(cudaPath, "lib64"));
        }

        folders.AddRange(["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu", "/usr/local/nvidia/lib64"]);
        foreach (string folder in folders)
        {
            foreach (string file in fileNames)
            {
                string path = Path.Combine(folder, file);
                if (File.Exists(path))
                {
                    yield return path;
                }
            }
        }
    }

    private static string Explain(string name, List<string> tried)
    {
        string what = name switch
        {
            Cuda => "the CUDA driver library (libcuda.so.1), which the NVIDIA driver installs",
            Cublas => "cuBLAS (libcublas.so.*), from the CUDA toolkit",
            Nvrtc => "NVRTC (libnvrtc.so.*), from the CUDA toolkit",
            _ => "the NVIDIA video decoder library (libnvcuvid.so.1), which the NVIDIA driver installs",
        };
        return $"Could not load {what}; tried {string.Join(", ", tried)}. Check: is there an NVIDIA GPU (nvidia-smi)? " +
            "Is the NVIDIA driver installed? Is the CUDA toolkit (12 or 13) installed, with its lib64 folder on " +
            "LD_LIBRARY_PATH or in the ldconfig cache, or CUDA_PATH set? Is this a 64-bit process?";
    }
}
