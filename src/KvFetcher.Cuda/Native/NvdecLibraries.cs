namespace KvFetcher.Cuda.Native;

/// <summary>
/// Checks that the NVIDIA driver's libraries load before any call reaches them, and explains what is missing: a
/// machine without an NVIDIA GPU or driver (or a container started without the driver's video capability) lacks
/// libcuda.so.1 or libnvcuvid.so.1.
/// </summary>
internal static class NvdecLibraries
{
    private static readonly Lazy<string?> s_problem = new(Probe, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Why NVDEC cannot be used here, or null when both libraries load.</summary>
    public static string? Problem => s_problem.Value;

    /// <summary>Throws <see cref="DllNotFoundException"/> with the explanation unless both libraries load.</summary>
    public static void EnsureLoaded()
    {
        if (Problem is { } problem)
        {
            throw new DllNotFoundException(problem);
        }
    }

    private static string? Probe()
    {
        var missing = new List<string>();
        if (!NativeLibraries.TryLoad(NativeLibraries.Cuda, out _))
        {
            missing.Add("libcuda.so.1");
        }

        if (!NativeLibraries.TryLoad(NativeLibraries.Nvcuvid, out _))
        {
            missing.Add("libnvcuvid.so.1");
        }

        return missing.Count == 0
            ? null
            : $"NVDEC needs {string.Join(" and ", missing)}, which did not load: install the NVIDIA driver (libnvidia-decode provides libnvcuvid), " +
              "and in a container expose the GPU with the driver capabilities compute and video (NVIDIA_DRIVER_CAPABILITIES=compute,video,utility).";
    }
}
