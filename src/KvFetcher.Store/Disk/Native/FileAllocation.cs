using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace KvFetcher.Store.Disk.Native;

/// <summary>
/// Allocates a new file's blocks before its bytes arrive, so that a full disk shows up before anything is written (and
/// before a streamed body is consumed), not at a later write or at fsync.
/// </summary>
internal static class FileAllocation
{
    /// <summary>
    /// Allocates <paramref name="length"/> bytes of <paramref name="file"/> (its size stays 0 until written, Linux
    /// <c>fallocate</c> with <c>FALLOC_FL_KEEP_SIZE</c>). Returns false where the filesystem or OS cannot (nothing is
    /// reserved then; a full disk shows up at a write); throws <see cref="IOException"/> with the errno as its HResult
    /// (28 = ENOSPC) when the space is not there.
    /// </summary>
    public static bool TryAllocate(SafeFileHandle file, long length)
    {
        const int KeepSize = 0x01;
        const int NotSupported = 95; // EOPNOTSUPP
        const int NoSuchCall = 38; // ENOSYS
        if (!OperatingSystem.IsLinux() || length == 0)
        {
            return false;
        }

        if (Interop.Libc.Fallocate(file, KeepSize, 0, length) == 0)
        {
            return true;
        }

        int errno = Marshal.GetLastPInvokeError();
        if (errno is NotSupported or NoSuchCall)
        {
            return false;
        }

        throw new IOException($"fallocate of {length} bytes failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})", errno);
    }
}
