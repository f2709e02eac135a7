using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Loader;

namespace KvFetcher.Codecs.Video.Native;

/// <summary>
/// Finds and loads libkvfvideo.so: the file named by <c>$KVFETCH_VIDEO_LIBRARY</c> when set (and then only it), else next
/// to the application (the build copies it there), else under <c>native/kvfvideo/build</c> in a directory above the
/// application (a source checkout), else the system's search path. A missing library (or one whose libx265 /
/// libavcodec is missing) becomes a <see cref="DllNotFoundException"/> that says what to install and build, and the
/// video codec reports itself unavailable with that reason (<see cref="TryEnsureLoaded"/>).
/// </summary>
internal static class KvfVideoLibrary
{
    public const string Name = "kvfvideo";

    public const string FileName = "libkvfvideo.so";

    /// <summary>The environment variable that names the library file to load instead of searching for it.</summary>
    public const string PathVariable = "KVFETCH_VIDEO_LIBRARY";

    public const string Remedy =
        "Install the Debian packages libx265-dev libavcodec-dev pkg-config gcc make (tools/setup.sh installs them) and build the shim with " +
        "`make -C native/kvfvideo` (tools/setup.sh runs it); rebuilding KvFetcher.Codecs then copies native/kvfvideo/build/libkvfvideo.so next to it.";

    private static readonly Lazy<IntPtr> s_library = new(LoadAndRegister, LazyThreadSafetyMode.ExecutionAndPublication);

    private static IntPtr s_loaded;

    /// <summary>Loads the library once (the first failure is rethrown on every later call) and checks its ABI version.</summary>
    public static void EnsureLoaded() => _ = s_library.Value;

    /// <summary>Loads the library once; false with the reason (what was tried and the remedy) when it cannot be used.</summary>
    public static bool TryEnsureLoaded([NotNullWhen(false)] out string? reason)
    {
        try
        {
            EnsureLoaded();
            reason = null;
            return true;
        }
        catch (DllNotFoundException ex)
        {
            reason = ex.Message;
            return false;
        }
        catch (EntryPointNotFoundException ex)
        {
            reason = $"{FileName} lacks an entry point this build needs ({ex.Message}). {Remedy}";
            return false;
        }
    }

    /// <summary>Loads the first candidate that loads; throws <see cref="DllNotFoundException"/> naming every attempt and the remedy.</summary>
    internal static IntPtr Load(IEnumerable<string> candidates)
    {
        var attempts = new List<string>();
        foreach (string candidate in candidates)
        {
            bool isPath = Path.IsPathRooted(candidate);
            if (isPath && !File.Exists(candidate))
            {
                attempts.Add($"{candidate}: not found");
                continue;
            }

            try
            {
                return NativeLibrary.Load(candidate);
            }
            catch (DllNotFoundException ex)
            {
                attempts.Add($"{candidate}: {ex.Message.ReplaceLineEndings(" ").Trim()}");
            }
            catch (BadImageFormatException ex)
            {
                attempts.Add($"{candidate}: {ex.Message.ReplaceLineEndings(" ").Trim()}");
            }
        }

        throw new DllNotFoundException($"The video codec needs {FileName}, which could not be loaded ({string.Join("; ", attempts)}). {Remedy}");
    }

    /// <summary>Where to look: only <paramref name="overridePath"/> when given, else the default places.</summary>
    internal static IEnumerable<string> Candidates(string? overridePath)
    {
        if (!string.IsNullOrWhiteSpace(overridePath))
        {
            yield return Path.GetFullPath(overridePath);
            yield break;
        }

        yield return Path.Combine(AppContext.BaseDirectory, FileName);
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string built = Path.Combine(dir.FullName, "native", "kvfvideo", "build", FileName);
            if (File.Exists(built))
            {
                yield return built;
                break;
            }
        }

        yield return FileName;
    }

    private static IntPtr LoadAndRegister()
    {
        IntPtr library = Load(Candidates(Environment.GetEnvironmentVariable(PathVariable)));
        s_loaded = library;
        Assembly assembly = typeof(KvfVideoLibrary).Assembly;
        (AssemblyLoadContext.GetLoadContext(assembly) ?? AssemblyLoadContext.Default).ResolvingUnmanagedDll += Resolve;
        int version = Interop.KvfVideo.GetVersion();
        if (version != Interop.KvfVideo.Version)
        {
            throw new DllNotFoundException($"{FileName} has ABI version {version}; this build needs {Interop.KvfVideo.Version}. {Remedy}");
        }

        return library;
    }

    private static IntPtr Resolve(Assembly assembly, string name) =>
        name == Name && assembly == typeof(KvfVideoLibrary).Assembly ? s_loaded : IntPtr.Zero;
}
