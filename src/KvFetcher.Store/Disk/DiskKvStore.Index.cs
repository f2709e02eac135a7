namespace KvFetcher.Store.Disk;

// The in-memory index: key -> entry, the LRU list and the byte accounting. Every member here runs under _gate.
public sealed partial class DiskKvStore
{
    /// <summary>
    /// Bytes counted in <see cref="_usedBytes"/>: every indexed object, every put between its reservation and its commit
    /// (<see cref="_reservedBytes"/>), and every removed object that a get still reads (its file is unlinked but its
    /// blocks stay allocated until the reader closes it). So used bytes are what the store holds on disk, and a put only
    /// reserves when its object fits under the cap: used bytes never exceed it.
    /// </summary>
    private long _usedBytes;

    /// <summary>Bytes reserved by puts that are writing their temp file.</summary>
    private long _reservedBytes;

    /// <summary>Least recently used first.</summary>
    private Entry? _lruHead;

    private Entry? _lruTail;

    /// <summary>Entries with a get in progress (in the index or removed).</summary>
    private int _pinnedEntries;

    /// <summary>Completed when a reservation or a pin is released; created only when a put waits for one.</summary>
    private TaskCompletionSource? _spaceReleased;

    /// <summary>One stored object.</summary>
    internal sealed class Entry(string key, string path, long size)
    {
        public string Key { get; } = key;

        public string Path { get; } = path;

        public long Size { get; } = size;

        public Entry? Previous { get; set; }

        public Entry? Next { get; set; }

        /// <summary>Gets reading the file now; a pinned entry is never evicted.</summary>
        public int Pins { get; set; }

        /// <summary>Out of the index (deleted, replaced, evicted or corrupt); its bytes stay counted while pinned.</summary>
        public bool Removed { get; set; }
    }

    private void AddMostRecent(Entry entry)
    {
        _index.Add(entry.Key, entry);
        Append(entry);
    }

    private void Touch(Entry entry)
    {
        if (entry != _lruTail)
        {
            Unlink(entry);
            Append(entry);
        }
    }

    private void Append(Entry entry)
    {
        entry.Previous = _lruTail;
        entry.Next = null;
        if (_lruTail is null)
        {
            _lruHead = entry;
        }
        else
        {
            _lruTail.Next = entry;
        }

        _lruTail = entry;
    }

    private void Unlink(Entry entry)
    {
        if (entry.Previous is null)
        {
            _lruHead = entry.Next;
        }
        else
        {
            entry.Previous.Next = entry.Next;
        }

        if (entry.Next is null)
        {
            _lruTail = entry.Previous;
        }
        else
        {
            entry.Next.Previous = entry.Previous;
        }

        entry.Previous = null;
        entry.Next = null;
    }

    /// <summary>Takes an entry out of the index (its file is already gone or replaced).</summary>
    private void RemoveEntry(Entry entry)
    {
        _index.Remove(entry.Key);
        Unlink(entry);
        entry.Removed = true;
        if (entry.Pins == 0)
        {
            _usedBytes -= entry.Size;
        }
    }

    /// <summary>Pins an entry for a get: it is not evicted until <see cref="Unpin"/>.</summary>
    private void Pin(Entry entry)
    {
        if (entry.Pins++ == 0)
        {
            _pinnedEntries++;
        }
    }

    /// <summary>Drops a get's pin; a removed entry's bytes are released with its last pin.</summary>
    private void Unpin(Entry entry)
    {
        lock (_gate)
        {
            if (--entry.Pins == 0)
            {
                _pinnedEntries--;
                if (entry.Removed)
                {
                    _usedBytes -= entry.Size;
                }

                SignalSpaceReleased();
            }
        }
    }

    /// <summary>
    /// Reserves <paramref name="size"/> bytes (at most the capacity) for a put, evicting least recently used unpinned
    /// objects to make room. When what is left to evict is not enough, the rest is held by other puts in flight or by
    /// gets in progress: returns false with a task that completes when one of them lets go, to try again then.
    /// </summary>
    private bool TryReserve(long size, string key, out Task? wait)
    {
        wait = null;
        lock (_gate)
        {
            if (_capacity is long capacity)
            {
                long needed = _usedBytes + size - capacity;
                if (needed > 0)
                {
                    if (!CanEvict(needed))
                    {
                        if (_reservedBytes > 0 || _pinnedEntries > 0)
                        {
                            _spaceReleased ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                            wait = _spaceReleased.Task;
                            return false;
                        }

                        // Unreachable while the accounting holds (an object no larger than the capacity fits once
                        // everything else is evicted); failing beats waiting forever if it ever does not.
                        throw new KvStoreFullException(
                            $"Disk store {Description}: cannot fit '{key}' ({size} bytes): {_usedBytes} of {capacity} bytes used and nothing to evict.");
                    }

                    EvictAtLeast(needed);
                }
            }

            _usedBytes += size;
            _reservedBytes += size;
            return true;
        }
    }

    /// <summary>Returns a put's reservation: committed (the object now counts itself) or abandoned (freed).</summary>
    private void ReleaseReservation(long size, bool committed)
    {
        _reservedBytes -= size;
        if (!committed)
        {
            _usedBytes -= size;
        }

        SignalSpaceReleased();
    }

    private void SignalSpaceReleased()
    {
        if (_spaceReleased is { } released)
        {
            _spaceReleased = null;
            released.SetResult();
        }
    }

    private bool CanEvict(long needed)
    {
        long evictable = 0;
        for (Entry? entry = _lruHead; entry is not null; entry = entry.Next)
        {
            if (entry.Pins == 0)
            {
                evictable += entry.Size;
                if (evictable >= needed)
                {
                    return true;
                }
            }
        }

        return false;
    }

    /// <summary>
    /// The filesystem is full: evicts least recently used unpinned objects until <paramref name="needed"/> bytes are
    /// freed (or none are left) and returns the bytes freed (0: nothing could be evicted).
    /// </summary>
    private long EvictForSpace(long needed)
    {
        lock (_gate)
        {
            long before = _usedBytes;
            EvictAtLeast(needed);
            return before - _usedBytes;
        }
    }

    /// <summary>Evicts least recently used unpinned objects until <paramref name="needed"/> bytes are freed (or none are left).</summary>
    private void EvictAtLeast(long needed)
    {
        Entry? entry = _lruHead;
        while (needed > 0 && entry is not null)
        {
            Entry? next = entry.Next;
            if (entry.Pins == 0)
            {
                DeleteFile(entry.Path, "evict");
                RemoveEntry(entry);
                needed -= entry.Size;
                Interlocked.Increment(ref _evictions);
            }

            entry = next;
        }
    }
}
