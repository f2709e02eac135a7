using System.Runtime.InteropServices;

namespace KvFetcher.Engine.Model.Native;

/// <summary>The C library call .NET has no API for: a file's inode, device and change time (ctime) through statx(2).</summary>
internal static partial class Interop
{
    internal static partial class Libc
    {
        private const string Name = "libc";

        /// <summary>AT_FDCWD: paths relative to the working directory.</summary>
        public const int AtCurrentDirectory = -100;

        /// <summary>STATX_BASIC_STATS: type, mode, nlink, uid, gid, times, inode, size, blocks.</summary>
        public const uint BasicStats = 0x7ff;

        /// <summary><c>int statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *buf)</c>: 0, or -1 with errno set.</summary>
        [LibraryImport(Name, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        public static unsafe partial int Statx(int directory, string path, int flags, uint mask, StatxBuffer* buffer);

        /// <summary><c>struct statx</c> (256 bytes, the same layout on every Linux architecture); only the fields read here are named.</summary>
        [StructLayout(LayoutKind.Explicit, Size = 256)]
        public struct StatxBuffer
        {
            [FieldOffset(32)]
            public ulong Inode;

            [FieldOffset(40)]
            public ulong Size;

            [FieldOffset(96)]
            public long ChangeSeconds;

            [FieldOffset(104)]
            public uint ChangeNanoseconds;

            [FieldOffset(112)]
            public long ModifySeconds;

            [FieldOffset(120)]
            public uint ModifyNanoseconds;

            [FieldOffset(136)]
            public uint DeviceMajor;

            [FieldOffset(140)]
            public uint DeviceMinor;
        }
    }
}
