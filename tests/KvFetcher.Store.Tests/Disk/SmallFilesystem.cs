using System.Diagnostics;

namespace KvFetcher.Store.Tests.Disk;

/// <summary>
/// A real filesystem that fills up: a tmpfs of a given size mounted on a fresh directory, unmounted and removed on
/// dispose. Mounting needs root (as the CI runs); elsewhere, or where mount is refused, the test is skipped, saying why.
/// </summary>
internal sealed class SmallFilesystem : IDisposable
{
    private SmallFilesystem(string path) => Path = path;

    public string Path { get; }

    public static SmallFilesystem Mount(int kibibytes)
    {
        Assert.SkipUnless(OperatingSystem.IsLinux(), "A full filesystem is made with tmpfs, which needs Linux.");
        Assert.SkipUnless(Environment.IsPrivilegedProcess, "Mounting a small tmpfs to fill up needs root (the CI runs the tests as root).");
        string path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "kvf-tmpfs-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(path);
        (int exit, string error) = Run("mount", "-t", "tmpfs", "-o", $"size={kibibytes}k,mode=0700", "tmpfs", path);
        if (exit != 0)
        {
            Directory.Delete(path);
            Assert.Skip($"mount -t tmpfs was refused (exit {exit}): {error.Trim()}");
        }

        return new SmallFilesystem(path);
    }

    /// <summary>Fills the filesystem with a file outside any store until <paramref name="leftBytes"/> or fewer are free.</summary>
    public void FillLeaving(long leftBytes)
    {
        long free = new DriveInfo(Path).AvailableFreeSpace;
        using var ballast = new FileStream(System.IO.Path.Combine(Path, "ballast"), FileMode.Create);
        ballast.Write(new byte[Math.Max(0, free - leftBytes)]);
    }

    public void Dispose()
    {
        (int exit, string error) = Run("umount", Path);
        Assert.True(exit == 0, $"umount {Path} failed (exit {exit}): {error}");
        Directory.Delete(Path, recursive: true);
    }

    private static (int Exit, string Error) Run(string program, params string[] args)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        using Process process = Process.Start(start)!;
        string error = process.StandardError.ReadToEnd();
        process.StandardOutput.ReadToEnd();
        Assert.True(process.WaitForExit(TimeSpan.FromSeconds(30)), $"{program} did not finish within 30 s");
        return (process.ExitCode, error);
    }
}
