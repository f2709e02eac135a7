using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace KvFetcher.Store.Disk.Native;

/// <summary>
/// Makes a directory's entries durable (fsync on the directory), which a rename or a new file needs before it survives
/// a power loss. Windows has no such call (and needs none for NTFS metadata journaling), so there it does nothing.
/// </summary>
internal static class DirectorySync
{
    /// <summary>fsyncs <paramref name="path"/>; throws <see cref="IOException"/> naming the OS error.</summary>
    public static void Flush(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            return;
        }

        int fd = Interop.Libc.Open(path, Interop.Libc.OpenReadOnlyCloseOnExec);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"open(\"{path}\") for fsync failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})", errno);
        }

        // The handle owns the descriptor and closes it; FlushToDisk is fsync(2) and reports its errno as an IOException.
        using var handle = new SafeFileHandle(fd, ownsHandle: true);
        RandomAccess.FlushToDisk(handle);
    }
}
