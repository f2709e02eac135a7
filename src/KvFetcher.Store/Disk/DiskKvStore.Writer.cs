using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Store.Disk.Native;
using Microsoft.Win32.SafeHandles;

namespace KvFetcher.Store.Disk;

public sealed partial class DiskKvStore
{
    /// <summary>
    /// Opens a put of <paramref name="length"/> bytes whose body is written as it arrives (the store server's PUT), so no
    /// copy of the whole object is held: reserves the bytes (evicting, or waiting for puts and gets in flight, as
    /// <see cref="PutAsync"/> does) and allocates them on disk before anything is consumed, so a full disk is refused
    /// (after evicting what can be) before the body is read. Write the body with <see cref="ObjectWriter.Write"/>, then
    /// <see cref="ObjectWriter.Commit"/>; disposing an uncommitted writer abandons the put and leaves any stored object
    /// as it was.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is shorter than any container or larger than an object can be.</exception>
    /// <exception cref="KvStoreFullException">The object is larger than the capacity, or the disk is full with nothing left to evict.</exception>
    /// <exception cref="KvStoreException">The temp file cannot be created.</exception>
    public ValueTask<ObjectWriter> OpenWriteAsync(ObjectKey key, long length, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        string name = CheckKey(key);
        if (length < ChunkContainer.MinSize || length > Array.MaxLength)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, $"A stored object is a chunk container of {ChunkContainer.MinSize} to {Array.MaxLength} bytes.");
        }

        CheckCapacity(name, length);
        return OpenWriteCoreAsync(name, length, new ContainerStreamCheck(length), cancellationToken);
    }

    private void CheckCapacity(string name, long length)
    {
        if (_capacity is long capacity && length > capacity)
        {
            throw new KvStoreFullException($"Disk store {Description}: '{name}' ({length} bytes) is larger than the capacity ({capacity} bytes).");
        }
    }

    /// <summary>
    /// Reserves, creates the temp file and allocates its blocks; <paramref name="check"/> is the streaming check of the
    /// bytes to be written, null when the caller verified them already.
    /// </summary>
    private async ValueTask<ObjectWriter> OpenWriteCoreAsync(string name, long length, ContainerStreamCheck? check, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        while (!TryReserve(length, name, out Task? wait))
        {
            await wait!.WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        string tempPath = Path.Join(_tempPath, $"{Interlocked.Increment(ref _tempCounter):x16}.tmp");
        SafeFileHandle? handle = null;
        try
        {
            handle = CreateTempFile(tempPath);
            AllocateEvictingForSpace(handle, name, tempPath, length);
            return new ObjectWriter(this, name, tempPath, handle, length, check);
        }
        catch
        {
            AbandonPut(tempPath, handle, length, name);
            throw;
        }
    }

    private static SafeFileHandle CreateTempFile(string tempPath)
    {
        try
        {
            return File.OpenHandle(tempPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, FileOptions.None);
        }
        catch (Exception ex) when (IsIoError(ex))
        {
            throw IoFailure("create", tempPath, ex);
        }
    }

    /// <summary>
    /// Allocates the object's blocks; while the filesystem is full, evicts least recently used objects and tries again,
    /// and refuses with <see cref="KvStoreFullException"/> once nothing is left to evict.
    /// </summary>
    private void AllocateEvictingForSpace(SafeFileHandle handle, string name, string tempPath, long length)
    {
        while (true)
        {
            try
            {
                FileAllocation.TryAllocate(handle, length);
                return;
            }
            catch (IOException ex) when (IsOutOfSpace(ex))
            {
                // Each round frees at least the object's size or everything evictable, so the loop ends.
                if (EvictForSpace(length) == 0)
                {
                    throw new KvStoreFullException(
                        $"Disk store {Description}: no space left on the device for '{name}' ({length} bytes) and nothing left to evict ({ex.Message})", ex);
                }
            }
            catch (IOException ex)
            {
                throw IoFailure("allocate", tempPath, ex);
            }
        }
    }

    /// <summary>
    /// An uncommitted put: closes and deletes its temp file and frees its reservation. With <paramref name="failure"/>
    /// (what ended the put), a temp file that cannot be removed is reported with both.
    /// </summary>
    private void AbandonPut(string tempPath, SafeFileHandle? handle, long length, string name, Exception? failure = null)
    {
        handle?.Dispose();
        lock (_gate)
        {
            ReleaseReservation(length, committed: false);
        }

        try
        {
            File.Delete(tempPath);
        }
        catch (Exception cleanup) when (IsIoError(cleanup))
        {
            string why = failure is null ? "was abandoned" : $"failed ({failure.Message})";
            throw new KvStoreException(
                $"Disk store {Description}: a put of '{name}' {why} and its temp file '{tempPath}' could not be removed ({cleanup.Message}); the next open deletes it.",
                failure is null ? cleanup : new AggregateException(failure, cleanup));
        }
    }

    /// <summary>
    /// Makes a fully written temp file the object: flushes it (with fsync on), renames it over the object's name, indexes
    /// it (replacing the old entry) and makes the rename durable. Until the rename, a failure abandons the put.
    /// </summary>
    private void CommitPut(string name, string tempPath, SafeFileHandle handle, long length)
    {
        string fan = FanOf(name);
        string path = Path.Join(_objectsPath, fan, name);
        try
        {
            try
            {
                File.SetLastAccessTimeUtc(handle, DateTime.UtcNow);
                if (_fsync)
                {
                    RandomAccess.FlushToDisk(handle);
                }
            }
            catch (Exception ex) when (IsIoError(ex))
            {
                throw IoFailure("write", tempPath, ex);
            }

            handle.Dispose();
            EnsureFanFolder(fan);
            lock (_gate)
            {
                try
                {
                    File.Move(tempPath, path, overwrite: true);
                }
                catch (Exception ex) when (IsIoError(ex))
                {
                    throw IoFailure("rename the temp file over", path, ex);
                }

                if (_index.TryGetValue(name, out Entry? old))
                {
                    RemoveEntry(old);
                }

                AddMostRecent(new Entry(name, path, length));
                ReleaseReservation(length, committed: true);
            }
        }
        catch (Exception failure)
        {
            AbandonPut(tempPath, handle, length, name, failure);
            throw;
        }

        Interlocked.Add(ref _bytesIn, length);
        if (_fsync)
        {
            SyncDirectory(Path.Join(_objectsPath, fan));
        }
    }

    /// <summary>
    /// One put opened by <see cref="OpenWriteAsync"/>: write its bytes in order, then <see cref="Commit"/>; dispose it
    /// always (an uncommitted one is abandoned). Not thread-safe.
    /// </summary>
    public sealed class ObjectWriter : IDisposable
    {
        private readonly DiskKvStore _store;
        private readonly string _name;
        private readonly string _tempPath;
        private readonly SafeFileHandle _handle;
        private readonly ContainerStreamCheck? _check;
        private long _written;
        private bool _done;

        internal ObjectWriter(DiskKvStore store, string name, string tempPath, SafeFileHandle handle, long length, ContainerStreamCheck? check)
        {
            _store = store;
            _name = name;
            _tempPath = tempPath;
            _handle = handle;
            _check = check;
            Length = length;
        }

        /// <summary>The object's length in bytes.</summary>
        public long Length { get; }

        /// <summary>Bytes written so far.</summary>
        public long Written => _written;

        /// <summary>Writes the next bytes of the object; the header is checked when its last byte passes.</summary>
        /// <exception cref="InvalidKvDataException">The header is malformed, or the bytes run past <see cref="Length"/>.</exception>
        /// <exception cref="KvStoreException">The file cannot be written (a full disk included: its blocks were allocated at open where the filesystem can).</exception>
        public void Write(ReadOnlySpan<byte> data)
        {
            ObjectDisposedException.ThrowIf(_done, this);
            if (data.Length > Length - _written)
            {
                throw new InvalidKvDataException($"KV store object '{_name}': {_written + data.Length} bytes written, more than the {Length} announced.");
            }

            _check?.Append(data);
            try
            {
                for (int done = 0; done < data.Length;)
                {
                    int slice = Math.Min(IoSliceBytes, data.Length - done);
                    RandomAccess.Write(_handle, data.Slice(done, slice), _written + done);
                    done += slice;
                }
            }
            catch (Exception ex) when (IsIoError(ex))
            {
                throw IoFailure("write", _tempPath, ex);
            }

            _written += data.Length;
        }

        /// <summary>Once every byte is written and the checksum holds: stores the object (durably with fsync on), replacing any old one.</summary>
        /// <exception cref="InvalidOperationException">Bytes are missing.</exception>
        /// <exception cref="InvalidKvDataException">The bytes are not an intact chunk container (nothing is stored).</exception>
        public void Commit()
        {
            ObjectDisposedException.ThrowIf(_done, this);
            if (_written != Length)
            {
                throw new InvalidOperationException($"{Length - _written} bytes of the object remain to be written.");
            }

            _check?.Complete();
            _done = true;
            _store.CommitPut(_name, _tempPath, _handle, Length);
        }

        /// <summary>Abandons the put unless it was committed: its temp file goes and its reservation is freed.</summary>
        public void Dispose()
        {
            if (!_done)
            {
                _done = true;
                _store.AbandonPut(_tempPath, _handle, Length, _name);
            }
        }
    }
}
