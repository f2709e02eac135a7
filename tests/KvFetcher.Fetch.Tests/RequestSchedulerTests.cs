using KvFetcher.Fetch.Scheduling;
using KvFetcher.Store.Disk;
using KvFetcher.Store.Shaping;

namespace KvFetcher.Fetch.Tests;

public sealed class RequestSchedulerTests(ReuseFixture fixture) : IClassFixture<ReuseFixture>, IAsyncDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("kvf-sched-").FullName;
    private DiskKvStore? _disk;

    public async ValueTask DisposeAsync()
    {
        if (_disk is not null)
        {
            await _disk.DisposeAsync();
        }

        Directory.Delete(_directory, recursive: true);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Submit_ReuseBehindSlowLinkThenPlainRequest_OrderDependsOnQueueing(bool separate)
    {
        ShapedKvStore slow = await SlowStoreAsync();
        // The restore is slower than computing on purpose: the waiting queue is told to accept that.
        await using var reuse = new KvReuse(fixture.Model, slow, new ReuseOptions { Ladder = [KvVariant.Raw], PrefixWaitFactor = 100 });
        await using var scheduler = new RequestScheduler(fixture.Model, reuse, new RequestSchedulerOptions { SeparateWaitingQueue = separate });
        int[] plain = fixture.Tokens[300..500];

        Task<RequestResult> reusing = scheduler.SubmitAsync(fixture.Tokens, reuse: true, TestContext.Current.CancellationToken);
        await Task.Delay(50, TestContext.Current.CancellationToken);
        Task<RequestResult> other = scheduler.SubmitAsync(plain, reuse: false, TestContext.Current.CancellationToken);
        Task first = await Task.WhenAny(reusing, other);
        RequestResult reused = await reusing;
        RequestResult computed = await other;

        // With a separate waiting queue the plain request is not stuck behind the ~1 s transfer; in one FIFO queue it is.
        Assert.Same(separate ? other : reusing, first);
        Assert.Equal(4 * 256, reused.ReusedTokens);
        Assert.Equal(System.Numerics.Tensors.TensorPrimitives.IndexOfMax(fixture.FullLogits), reused.FirstToken);
        var logits = new float[fixture.Model.Config.VocabSize];
        fixture.Model.CreateSession(plain.Length).Prefill(plain, 0, logits);
        Assert.Equal(System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits), computed.FirstToken);
    }

    /// <summary>The prompt's chunks (raw) in a disk store behind a 4 MB/s link: restoring 4 MB takes about a second.</summary>
    private async Task<ShapedKvStore> SlowStoreAsync()
    {
        _disk = DiskKvStore.Open(new DiskKvStoreOptions { Directory = _directory, Fsync = false });
        await using (var writer = new KvReuse(fixture.Model, _disk, new ReuseOptions { Ladder = [KvVariant.Raw] }))
        {
            await writer.PrefillAsync(fixture.Model.CreateSession(fixture.Tokens.Length), fixture.Tokens, PrefillStrategy.ComputeOnly, new float[fixture.Model.Config.VocabSize], cancellationToken: TestContext.Current.CancellationToken);
            await writer.Publisher.WhenIdleAsync();
        }

        return new ShapedKvStore(_disk, BandwidthSchedule.Constant(4e6), ownsInner: false);
    }
}
