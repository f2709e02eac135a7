using KvFetcher.Core;
using KvFetcher.Core.Containers;
using Microsoft.Win32.SafeHandles;

namespace KvFetcher.Store.Disk;

public sealed partial class DiskKvStore
{
    /// <summary>
    /// Opens <paramref name="key"/> to be sent while it is read (the store server's GET): its length is known before
    /// any byte is read, the header is checked with the first slice and the checksum after the last
    /// (<see cref="ObjectReader.Finish"/>). Null on a miss. What was read before <see cref="ObjectReader.Finish"/>
    /// answers is unverified: a reader that has sent it must abort the transfer when the object turns out corrupt (the
    /// store has then discarded it, so the next get is a miss). <see cref="GetAsync"/> verifies before it hands out
    /// anything; this is for a sender that cannot hold a whole object first.
    /// </summary>
    public ObjectReader? OpenRead(ObjectKey key)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        string name = CheckKey(key);
        if (OpenEntry(name, ByteRange.All, out _, out _) is not { } opened)
        {
            return null;
        }

        if (opened.Entry.Size < ChunkContainer.MinSize)
        {
            // Too short to be a container: corrupt (a longer one's header is checked with its first read).
            opened.Handle.Dispose();
            Unpin(opened.Entry);
            DiscardCorrupt(opened.Entry);
            return null;
        }

        return new ObjectReader(this, opened.Entry, opened.Handle);
    }

    /// <summary>One object opened by <see cref="OpenRead"/>: read it in order, then <see cref="Finish"/>; dispose it always.</summary>
    public sealed class ObjectReader : IDisposable
    {
        private readonly DiskKvStore _store;
        private readonly Entry _entry;
        private readonly SafeFileHandle _handle;
        private readonly ContainerStreamCheck _check;
        private bool _finished;
        private bool _intact;
        private int _disposed;

        internal ObjectReader(DiskKvStore store, Entry entry, SafeFileHandle handle)
        {
            _store = store;
            _entry = entry;
            _handle = handle;
            _check = new ContainerStreamCheck(entry.Size);
        }

        /// <summary>The object's length in bytes.</summary>
        public long Length => _entry.Size;

        /// <summary>Bytes read so far.</summary>
        public long Position => _check.Seen;

        /// <summary>Whether every byte has been read.</summary>
        public bool AtEnd => _check.IsComplete;

        /// <summary>
        /// Reads the next bytes into <paramref name="destination"/> (as many as fit and remain) and returns their count;
        /// checks the header when it passes.
        /// </summary>
        /// <exception cref="InvalidKvDataException">The header is malformed or the file is shorter than indexed (the store has discarded the object).</exception>
        /// <exception cref="KvStoreException">The file cannot be read.</exception>
        public int Read(Span<byte> destination)
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            int want = (int)Math.Min(destination.Length, Length - Position);
            Span<byte> target = destination[..want];
            try
            {
                int done = 0;
                while (done < want)
                {
                    int read = RandomAccess.Read(_handle, target[done..], Position + done);
                    if (read == 0)
                    {
                        throw new InvalidKvDataException($"KV store object '{_entry.Key}': the file ended at {Position + done} of its {Length} bytes (truncated).");
                    }

                    done += read;
                }

                _check.Append(target);
                return want;
            }
            catch (InvalidKvDataException)
            {
                _finished = true;
                _store.DiscardCorrupt(_entry);
                throw;
            }
            catch (Exception ex) when (IsIoError(ex))
            {
                throw IoFailure("read", _entry.Path, ex);
            }
        }

        /// <summary>
        /// After the last byte: whether the object is intact (its checksum holds; asked again, the same answer). A
        /// corrupt one is discarded and counted; an intact one counts as a hit and its access time is recorded.
        /// </summary>
        /// <exception cref="InvalidOperationException">Bytes remain to be read.</exception>
        public bool Finish()
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            if (!AtEnd && !_finished)
            {
                throw new InvalidOperationException($"{Length - Position} bytes of the object remain to be read.");
            }

            if (_finished)
            {
                return _intact;
            }

            _finished = true;
            try
            {
                _check.Complete();
            }
            catch (InvalidKvDataException)
            {
                _store.DiscardCorrupt(_entry);
                return false;
            }

            _intact = true;
            _store.RecordHit(_handle, _entry, Length);
            return true;
        }

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                _handle.Dispose();
                _store.Unpin(_entry);
            }
        }
    }
}
