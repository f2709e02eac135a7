namespace KvFetcher.Fetch.Fetching;

/// <summary>What the fetch pipeline of one request reads (derived once from <see cref="ReuseOptions"/>).</summary>
/// <param name="TransfersInFlight">Concurrent transfers.</param>
/// <param name="DecodeWorkers">Decode workers.</param>
/// <param name="ChunkTimeout">The most one chunk's transfer may take.</param>
/// <param name="MaxBufferedBytes">Cap on the fetched and decoded bytes buffered (sets how many chunk slots there are).</param>
internal sealed record FetcherOptions(int TransfersInFlight, int DecodeWorkers, TimeSpan ChunkTimeout, long MaxBufferedBytes)
{
    /// <summary>Chunk slots for chunks of <paramref name="chunkBytes"/>: as many as the buffer cap allows, 2 to 16; one when not pipelined.</summary>
    public int Slots(int chunkBytes, bool pipelined) => pipelined ? (int)Math.Clamp(MaxBufferedBytes / (3L * chunkBytes), 2, 16) : 1;

    /// <summary>These options for a sequential fetch (one transfer at a time).</summary>
    public FetcherOptions Sequential => this with { TransfersInFlight = 1 };
}
