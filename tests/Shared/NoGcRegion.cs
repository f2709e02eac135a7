using System.Runtime;

namespace KvFetcher.Tests;

/// <summary>
/// Holds off garbage collection while an allocation check warms up and measures: a collection in between lets
/// <see cref="System.Buffers.ArrayPool{T}.Shared"/> trim its buffers, and the next rental then allocates a new one. That
/// is the pool's business, not the code under test; with other test projects running alongside it happened in one
/// of four fresh CI runs (6 KB in the CacheGen check), and in the engine's threaded MatMul check (7.6 KB).
/// </summary>
/// <remarks>
/// The region is process-wide: when another test already holds one, this one runs under it (or unprotected once that
/// ends), and only the test that started a region ends it.
/// </remarks>
internal sealed class NoGcRegion : IDisposable
{
    private static readonly Lock s_lock = new();
    private readonly bool _started;

    public NoGcRegion(long budgetBytes = 64L << 20)
    {
        lock (s_lock)
        {
            _started = GCSettings.LatencyMode != GCLatencyMode.NoGCRegion && GC.TryStartNoGCRegion(budgetBytes);
        }
    }

    public void Dispose()
    {
        lock (s_lock)
        {
            if (_started && GCSettings.LatencyMode == GCLatencyMode.NoGCRegion)
            {
                GC.EndNoGCRegion();
            }
        }
    }
}
