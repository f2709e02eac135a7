using System.Runtime.InteropServices;

namespace KvFetcher.Store.Disk.Native;

/// <summary>
/// The C library calls .NET has no API for: opening a directory, so that it can be fsynced, and allocating a file's
/// blocks with the errno of a failure (.NET's preallocation reports a full disk without it).
/// </summary>
internal static partial class Interop
{
    internal static partial class Libc
    {
        private const string Name = "libc";

        /// <summary>O_RDONLY | O_CLOEXEC (the same values on Linux x64 and arm64).</summary>
        public const int OpenReadOnlyCloseOnExec = 0x80000;

        /// <summary><c>int open(const char *path, int flags)</c>: a file descriptor, or -1 with errno set.</summary>
        [LibraryImport(Name, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        public static partial int Open(string path, int flags);

        /// <summary><c>int fallocate(int fd, int mode, off_t offset, off_t len)</c> (Linux): 0, or -1 with errno set.</summary>
        [LibraryImport(Name, EntryPoint = "fallocate", SetLastError = true)]
        public static partial int Fallocate(Microsoft.Win32.SafeHandles.SafeFileHandle fd, int mode, long offset, long length);
    }
}
