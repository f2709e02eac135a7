using System.Buffers;
using KvFetcher.Core.Containers;
using KvFetcher.Store.Disk.Native;
using Microsoft.Win32.SafeHandles;

namespace KvFetcher.Store.Disk;

/// <summary>
/// The embedded default store: one file per object under a local directory.
/// <code>
/// {directory}/.lock              held (flock) while a store has the directory open
/// {directory}/tmp/               puts write here first; emptied on open
/// {directory}/objects/ab/abcd…   objects, fanned out by the first two characters of their key
/// </code>
/// A put writes a temp file, fsyncs it, renames it over the object's name and fsyncs the directory, so a crash leaves
/// the old object or the new one, never a torn one. The index (key, size, recency) lives in memory and is rebuilt from
/// the directory on <see cref="Open"/>; recency survives a restart as each file's access time, which puts and gets set.
/// With a capacity, a put reserves its bytes first, evicting least recently used objects: used bytes (which count puts
/// in flight, and deleted objects a get still reads) never exceed the cap. An object a get is reading is never evicted;
/// a put that needs its space waits (cancellably) until the get is done. Only an object larger than the capacity is
/// refused (<see cref="KvStoreFullException"/>). When the filesystem fills up first (ENOSPC or EDQUOT, with or without a
/// capacity), a put evicts least recently used objects and tries again, and is refused with
/// <see cref="KvStoreFullException"/> only once nothing is left to evict.
/// Every get reads the whole file and verifies its checksum before a byte is handed out. A server that cannot hold whole
/// objects streams them instead: <see cref="OpenRead"/> (checked as read, the last bytes held until the checksum holds)
/// and <see cref="OpenWriteAsync"/> (its blocks allocated before the body is read, so a full disk evicts or refuses
/// first; the object replaces the old one only once its checksum holds). Thread-safe.
/// </summary>
public sealed partial class DiskKvStore : IKvStore
{
    /// <summary>Reads and writes go in slices of this size, checking cancellation between them.</summary>
    private const int IoSliceBytes = 4 << 20;

    private const string LockFileName = ".lock";
    private const string ObjectsFolder = "objects";
    private const string TempFolder = "tmp";

    private static readonly int s_minimumObjectSize = ChunkContainer.HeaderSize + ChunkContainer.ChecksumSize;

    private readonly Lock _gate = new();
    private readonly Dictionary<string, Entry> _index = new(StringComparer.Ordinal);
    private readonly HashSet<string> _fanFolders = new(StringComparer.Ordinal);
    private readonly string _objectsPath;
    private readonly string _tempPath;
    private readonly long? _capacity;
    private readonly bool _fsync;
    private readonly SafeFileHandle _lockFile;

    private long _tempCounter;
    private long _hits;
    private long _misses;
    private long _bytesIn;
    private long _bytesOut;
    private long _evictions;
    private long _corruptObjects;
    private int _disposed;

    private DiskKvStore(string root, DiskKvStoreOptions options, SafeFileHandle lockFile)
    {
        RootPath = root;
        Description = $"disk:{root}";
        _objectsPath = Path.Join(root, ObjectsFolder);
        _tempPath = Path.Join(root, TempFolder);
        _capacity = options.CapacityBytes;
        _fsync = options.Fsync;
        _lockFile = lockFile;
    }

    public string Description { get; }

    /// <summary>The store's directory (full path).</summary>
    public string RootPath { get; }

    /// <summary>
    /// Opens (creating when missing) the store in <paramref name="options"/>' directory: deletes leftover temp files,
    /// rebuilds the index from the object files and, with a capacity, evicts down to it. Throws
    /// <see cref="KvStoreException"/> when the directory cannot be used or another store holds it.
    /// </summary>
    public static DiskKvStore Open(DiskKvStoreOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        string root = Path.GetFullPath(options.Directory);
        try
        {
            Directory.CreateDirectory(root);
        }
        catch (Exception ex) when (IsIoError(ex))
        {
            throw IoFailure("create the store directory", root, ex);
        }

        string lockPath = Path.Join(root, LockFileName);
        SafeFileHandle lockFile;
        try
        {
            // FileShare.None takes an exclusive advisory lock (flock) on Unix: a second store on the directory, in this
            // process or another, would delete the first one's temp files and corrupt its accounting.
            lockFile = File.OpenHandle(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException ex)
        {
            throw new KvStoreException($"Disk store: '{root}' is in use by another store (cannot lock '{lockPath}': {ex.Message}).", ex);
        }
        catch (UnauthorizedAccessException ex)
        {
            throw IoFailure("create the lock file", lockPath, ex);
        }

        var store = new DiskKvStore(root, options, lockFile);
        try
        {
            store.Recover();
            return store;
        }
        catch
        {
            lockFile.Dispose();
            throw;
        }
    }

    public ValueTask PutAsync(ObjectKey key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        string name = CheckKey(key);
        if (!ChunkContainer.IsIntact(data.Span))
        {
            throw new ArgumentException($"Refusing to store '{name}': its {data.Length} bytes are not an intact chunk container.", nameof(data));
        }

        CheckCapacity(name, data.Length);
        return PutCoreAsync(name, data, cancellationToken);
    }

    public ValueTask<StoreRead> GetAsync(ObjectKey key, IBufferWriter<byte> destination, ByteRange range = default, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        string name = CheckKey(key);
        ArgumentNullException.ThrowIfNull(destination);
        try
        {
            return new ValueTask<StoreRead>(Get(name, destination, range, cancellationToken));
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<StoreRead>(cancellationToken);
        }
        catch (Exception ex) when (ex is KvStoreException or ArgumentOutOfRangeException)
        {
            return ValueTask.FromException<StoreRead>(ex);
        }
    }

    public ValueTask<bool[]> ExistsAsync(IReadOnlyList<ObjectKey> keys, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        ArgumentNullException.ThrowIfNull(keys);
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<bool[]>(cancellationToken);
        }

        var found = new bool[keys.Count];
        lock (_gate)
        {
            for (int i = 0; i < found.Length; i++)
            {
                found[i] = _index.ContainsKey(CheckKey(keys[i]));
            }
        }

        return new ValueTask<bool[]>(found);
    }

    public ValueTask<int> LongestPrefixAsync(IReadOnlyList<ObjectKey> chain, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        ArgumentNullException.ThrowIfNull(chain);
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<int>(cancellationToken);
        }

        int stored = 0;
        lock (_gate)
        {
            while (stored < chain.Count && _index.ContainsKey(CheckKey(chain[stored])))
            {
                stored++;
            }
        }

        return new ValueTask<int>(stored);
    }

    public ValueTask<bool> DeleteAsync(ObjectKey key, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        string name = CheckKey(key);
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<bool>(cancellationToken);
        }

        try
        {
            lock (_gate)
            {
                if (!_index.TryGetValue(name, out Entry? entry))
                {
                    return new ValueTask<bool>(false);
                }

                DeleteFile(entry.Path, "delete");
                RemoveEntry(entry);
                return new ValueTask<bool>(true);
            }
        }
        catch (KvStoreException ex)
        {
            return ValueTask.FromException<bool>(ex);
        }
    }

    public ValueTask<StoreStats> GetStatsAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<StoreStats>(cancellationToken);
        }

        long objects;
        long used;
        lock (_gate)
        {
            objects = _index.Count;
            used = _usedBytes;
        }

        return new ValueTask<StoreStats>(new StoreStats
        {
            Objects = objects,
            UsedBytes = used,
            CapacityBytes = _capacity,
            Hits = Interlocked.Read(ref _hits),
            Misses = Interlocked.Read(ref _misses),
            BytesIn = Interlocked.Read(ref _bytesIn),
            BytesOut = Interlocked.Read(ref _bytesOut),
            Evictions = Interlocked.Read(ref _evictions),
            CorruptObjects = Interlocked.Read(ref _corruptObjects),
        });
    }

    /// <summary>Releases the directory lock. Objects stay on disk for the next <see cref="Open"/>.</summary>
    public ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _lockFile.Dispose();
        }

        return ValueTask.CompletedTask;
    }

    public override string ToString() => Description;

    /// <summary>
    /// Puts verified bytes through an <see cref="ObjectWriter"/>, and when the filesystem itself is full (ENOSPC or
    /// EDQUOT: below the capacity, or without one), evicts least recently used objects and tries again; once nothing is
    /// left to evict, refuses with <see cref="KvStoreFullException"/>. (The writer's allocation catches a full disk before
    /// any write where the filesystem can allocate; a later ENOSPC, at a write or at fsync, is caught here.)
    /// </summary>
    private async ValueTask PutCoreAsync(string name, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        while (true)
        {
            try
            {
                using ObjectWriter writer = await OpenWriteCoreAsync(name, data.Length, check: null, cancellationToken).ConfigureAwait(false);
                cancellationToken.ThrowIfCancellationRequested();
                writer.Write(data.Span);
                cancellationToken.ThrowIfCancellationRequested();
                writer.Commit();
                return;
            }
            catch (KvStoreException ex) when (ex is not KvStoreFullException && IsOutOfSpace(ex))
            {
                // (A KvStoreFullException comes from the writer's allocation, which has already evicted everything it
                // could: it passes through as it is.) Each round frees at least the object's size or everything
                // evictable, so the loop ends.
                if (EvictForSpace(data.Length) == 0)
                {
                    throw new KvStoreFullException(
                        $"Disk store {Description}: no space left on the device for '{name}' ({data.Length} bytes) and nothing left to evict ({ex.Message})", ex);
                }
            }
        }
    }

    private StoreRead Get(string name, IBufferWriter<byte> destination, ByteRange range, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (OpenEntry(name, range, out long start, out long count) is not { } opened)
        {
            return StoreRead.Miss;
        }

        (Entry entry, SafeFileHandle handle) = opened;

        try
        {
            using (handle)
            {
                int length = (int)entry.Size;
                bool intact;
                if (range.IsAll)
                {
                    // The common case: read straight into the caller's buffer, verify there, and only then commit it.
                    Span<byte> target = destination.GetMemory(length).Span[..length];
                    intact = ReadFile(handle, entry.Path, target, cancellationToken) && ChunkContainer.IsIntact(target);
                    if (intact)
                    {
                        destination.Advance(length);
                    }
                }
                else
                {
                    byte[] scratch = ArrayPool<byte>.Shared.Rent(length);
                    try
                    {
                        Span<byte> whole = scratch.AsSpan(0, length);
                        intact = ReadFile(handle, entry.Path, whole, cancellationToken) && ChunkContainer.IsIntact(whole);
                        if (intact && count > 0)
                        {
                            whole.Slice((int)start, (int)count).CopyTo(destination.GetSpan((int)count));
                            destination.Advance((int)count);
                        }
                    }
                    finally
                    {
                        ArrayPool<byte>.Shared.Return(scratch);
                    }
                }

                if (!intact)
                {
                    DiscardCorrupt(entry);
                    return StoreRead.Miss;
                }

                RecordHit(handle, entry, count);
                return new StoreRead(Found: true, ObjectLength: length, BytesWritten: count);
            }
        }
        finally
        {
            Unpin(entry);
        }
    }

    /// <summary>
    /// Finds <paramref name="name"/> and opens its file under the gate, so a concurrent delete or replace cannot slip
    /// between the lookup and the open (once open, the bytes stay readable even if the name is unlinked later); the entry
    /// comes back pinned and touched, with <paramref name="range"/> resolved against its size into
    /// <paramref name="start"/> and <paramref name="count"/>, or null on a miss.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="range"/> lies outside the object (nothing is opened).</exception>
    private (Entry Entry, SafeFileHandle Handle)? OpenEntry(string name, ByteRange range, out long start, out long count)
    {
        start = 0;
        count = 0;
        lock (_gate)
        {
            if (!_index.TryGetValue(name, out Entry? entry))
            {
                Interlocked.Increment(ref _misses);
                return null;
            }

            if (!range.TryResolve(entry.Size, out start, out count))
            {
                throw new ArgumentOutOfRangeException(nameof(range), range, $"The range lies outside '{name}' ({entry.Size} bytes).");
            }

            SafeFileHandle handle;
            try
            {
                handle = File.OpenHandle(entry.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            }
            catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
            {
                // Removed behind the store's back: the index is wrong about it, so it is a bad object.
                RemoveEntry(entry);
                Interlocked.Increment(ref _corruptObjects);
                Interlocked.Increment(ref _misses);
                return null;
            }
            catch (Exception ex) when (IsIoError(ex))
            {
                throw IoFailure("open", entry.Path, ex);
            }

            Pin(entry);
            Touch(entry);
            return (entry, handle);
        }
    }

    /// <summary>Reads the whole file into <paramref name="target"/>; false when the file is not exactly that long.</summary>
    private static bool ReadFile(SafeFileHandle handle, string path, Span<byte> target, CancellationToken cancellationToken)
    {
        try
        {
            if (RandomAccess.GetLength(handle) != target.Length)
            {
                return false;
            }

            int done = 0;
            while (done < target.Length)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int read = RandomAccess.Read(handle, target.Slice(done, Math.Min(IoSliceBytes, target.Length - done)), done);
                if (read == 0)
                {
                    return false;
                }

                done += read;
            }

            return true;
        }
        catch (Exception ex) when (IsIoError(ex))
        {
            throw IoFailure("read", path, ex);
        }
    }

    /// <summary>A verified read of <paramref name="bytes"/> of <paramref name="entry"/>: its access time, a hit, the bytes out.</summary>
    private void RecordHit(SafeFileHandle handle, Entry entry, long bytes)
    {
        RecordAccess(handle, entry.Path);
        Interlocked.Increment(ref _hits);
        Interlocked.Add(ref _bytesOut, bytes);
    }

    /// <summary>Stores the access time on the file, so recency survives a restart (the index is rebuilt from it).</summary>
    private static void RecordAccess(SafeFileHandle handle, string path)
    {
        try
        {
            File.SetLastAccessTimeUtc(handle, DateTime.UtcNow);
        }
        catch (Exception ex) when (IsIoError(ex))
        {
            throw IoFailure("set the access time of", path, ex);
        }
    }

    /// <summary>An object failed verification: remove it (unless a put or delete already replaced it) and count it.</summary>
    private void DiscardCorrupt(Entry entry)
    {
        lock (_gate)
        {
            if (!entry.Removed)
            {
                DeleteFile(entry.Path, "delete the corrupt object");
                RemoveEntry(entry);
            }
        }

        Interlocked.Increment(ref _corruptObjects);
        Interlocked.Increment(ref _misses);
    }

    private void EnsureFanFolder(string fan)
    {
        lock (_gate)
        {
            if (_fanFolders.Contains(fan))
            {
                return;
            }
        }

        string path = Path.Join(_objectsPath, fan);
        try
        {
            Directory.CreateDirectory(path);
        }
        catch (Exception ex) when (IsIoError(ex))
        {
            throw IoFailure("create the folder", path, ex);
        }

        if (_fsync)
        {
            SyncDirectory(_objectsPath);
        }

        lock (_gate)
        {
            _fanFolders.Add(fan);
        }
    }

    private void DeleteFile(string path, string action)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception ex) when (IsIoError(ex))
        {
            throw new KvStoreException($"Disk store {Description}: cannot {action} '{path}': {ex.Message}", ex);
        }
    }

    private static void SyncDirectory(string path)
    {
        try
        {
            DirectorySync.Flush(path);
        }
        catch (Exception ex) when (IsIoError(ex))
        {
            throw IoFailure("fsync the directory", path, ex);
        }
    }

    /// <summary>The folder an object lives in: the first two characters of its key.</summary>
    private static string FanOf(string key) => key.Length > 2 ? key[..2] : key;

    private static string CheckKey(ObjectKey key) =>
        key.Value ?? throw new ArgumentException("The default ObjectKey names no object.", nameof(key));

    private static bool IsIoError(Exception ex) => ex is IOException or UnauthorizedAccessException;

    /// <summary>
    /// Whether <paramref name="ex"/> (or what it wraps) is the filesystem running out of space: on Unix .NET puts the errno
    /// in <see cref="Exception.HResult"/> (ENOSPC 28; EDQUOT 122 on Linux, 69 on macOS), on Windows ERROR_DISK_FULL and
    /// ERROR_HANDLE_DISK_FULL as HRESULTs.
    /// </summary>
    internal static bool IsOutOfSpace(Exception? ex)
    {
        int quotaExceeded = OperatingSystem.IsMacOS() ? 69 : 122;
        for (; ex is not null; ex = ex.InnerException)
        {
            if (ex is IOException io && (io.HResult == 28 || io.HResult == quotaExceeded || io.HResult is unchecked((int)0x80070070) or unchecked((int)0x80070027)))
            {
                return true;
            }
        }

        return false;
    }

    private static KvStoreException IoFailure(string action, string path, Exception ex) =>
        new($"Disk store: cannot {action} '{path}': {ex.Message}", ex);
}
