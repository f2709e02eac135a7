namespace KvFetcher.Store.Disk;

// Open's work: clean up after a crash and rebuild the index from the files.
public sealed partial class DiskKvStore
{
    private void Recover()
    {
        try
        {
            Directory.CreateDirectory(_objectsPath);
            Directory.CreateDirectory(_tempPath);
            DeleteLeftoverTempFiles();
            RebuildIndex();
        }
        catch (Exception ex) when (IsIoError(ex))
        {
            throw new KvStoreException($"Disk store {Description}: cannot open: {ex.Message}", ex);
        }

        if (_capacity is long capacity && _usedBytes > capacity)
        {
            lock (_gate)
            {
                EvictAtLeast(_usedBytes - capacity);
            }
        }

        if (_fsync)
        {
            SyncDirectory(RootPath);
        }
    }

    /// <summary>Temp files are puts that never committed (the process died between write and rename): none is visible.</summary>
    private void DeleteLeftoverTempFiles()
    {
        foreach (FileSystemInfo leftover in new DirectoryInfo(_tempPath).EnumerateFileSystemInfos())
        {
            if (leftover is DirectoryInfo folder)
            {
                folder.Delete(recursive: true);
            }
            else
            {
                leftover.Delete();
            }
        }
    }

    /// <summary>
    /// Indexes every object file, least recently accessed first. Files that are not named like an object in its fan
    /// folder are not the store's and are left alone; an object file too short to be a container can only be a torn
    /// write from before a crash with fsync off, and is deleted.
    /// </summary>
    private void RebuildIndex()
    {
        var found = new List<(Entry Entry, DateTime Accessed)>();
        foreach (DirectoryInfo folder in new DirectoryInfo(_objectsPath).EnumerateDirectories())
        {
            _fanFolders.Add(folder.Name);
            foreach (FileInfo file in folder.EnumerateFiles())
            {
                string key = file.Name;
                if (!ObjectKey.IsValid(key) || FanOf(key) != folder.Name || file.Length > Array.MaxLength)
                {
                    continue;
                }

                if (file.Length < s_minimumObjectSize)
                {
                    file.Delete();
                    Interlocked.Increment(ref _corruptObjects);
                    continue;
                }

                found.Add((new Entry(key, file.FullName, file.Length), file.LastAccessTimeUtc));
            }
        }

        found.Sort(static (a, b) =>
        {
            int byTime = a.Accessed.CompareTo(b.Accessed);
            return byTime != 0 ? byTime : string.CompareOrdinal(a.Entry.Key, b.Entry.Key);
        });
        lock (_gate)
        {
            foreach ((Entry entry, _) in found)
            {
                AddMostRecent(entry);
                _usedBytes += entry.Size;
            }
        }
    }
}
