using System.Buffers;
using KvFetcher.Core;
using KvFetcher.Core.Keys;
using KvFetcher.Engine;
using KvFetcher.Engine.Model;
using KvFetcher.Engine.Tokenization;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Store;

namespace KvFetcher.Fetch.Tests;

/// <summary>Every request a <see cref="RequestScheduler"/> accepts completes, with a result or an exception, never a hang.</summary>
public sealed class RequestSchedulerFailureTests(ReuseFixture fixture) : IClassFixture<ReuseFixture>
{
    private static readonly TimeSpan s_hangGuard = TimeSpan.FromSeconds(30);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Submit_EmptyPrompt_FailsWithArgumentException(bool reuse)
    {
        await using var store = new BrokenStore();
        await using var kv = new KvReuse(fixture.Model, store);
        await using var scheduler = new RequestScheduler(fixture.Model, kv);

        Task<RequestResult> request = scheduler.SubmitAsync([], reuse, TestContext.Current.CancellationToken);

        await Assert.ThrowsAsync<ArgumentException>(() => request.WaitAsync(s_hangGuard, TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task Submit_SessionCannotBeCreated_FailsWithThatException()
    {
        var model = new NoSessionModel(fixture.Model);
        await using var store = new BrokenStore();
        await using var kv = new KvReuse(model, store);
        await using var scheduler = new RequestScheduler(model, kv);

        Task<RequestResult> request = scheduler.SubmitAsync(fixture.Tokens, reuse: true, TestContext.Current.CancellationToken);

        await Assert.ThrowsAsync<InsufficientMemoryException>(() => request.WaitAsync(s_hangGuard, TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task Submit_RestoreFails_ComputesTheWholePrompt()
    {
        await using var store = new BrokenStore();
        await using var kv = new KvReuse(fixture.Model, store);
        await using var scheduler = new RequestScheduler(fixture.Model, kv);

        RequestResult result = await scheduler.SubmitAsync(fixture.Tokens, reuse: true, TestContext.Current.CancellationToken)
            .WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.Equal(0, result.ReusedTokens);
        Assert.Equal(System.Numerics.Tensors.TensorPrimitives.IndexOfMax(fixture.FullLogits), result.FirstToken);
    }

    /// <summary>A store that breaks its contract: every call throws something other than <see cref="KvStoreException"/>.</summary>
    private sealed class BrokenStore : IKvStore
    {
        public string Description => "broken";

        public ValueTask PutAsync(ObjectKey key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default) => throw Broken();

        public ValueTask<StoreRead> GetAsync(ObjectKey key, IBufferWriter<byte> destination, ByteRange range = default, CancellationToken cancellationToken = default) => throw Broken();

        public ValueTask<bool[]> ExistsAsync(IReadOnlyList<ObjectKey> keys, CancellationToken cancellationToken = default) => throw Broken();

        public ValueTask<int> LongestPrefixAsync(IReadOnlyList<ObjectKey> chain, CancellationToken cancellationToken = default) => throw Broken();

        public ValueTask<bool> DeleteAsync(ObjectKey key, CancellationToken cancellationToken = default) => throw Broken();

        public ValueTask<StoreStats> GetStatsAsync(CancellationToken cancellationToken = default) => throw Broken();

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;

        private static InvalidOperationException Broken() => new("the store is broken");
    }

    /// <summary>The bundled model, except that no session can be created (as when device memory runs out).</summary>
    private sealed class NoSessionModel(IInferenceModel inner) : IInferenceModel
    {
        public ModelConfig Config => inner.Config;

        public TextTokenizer Tokenizer => inner.Tokenizer;

        public string Directory => inner.Directory;

        public ModelFingerprint Fingerprint => inner.Fingerprint;

        public DType KvStorageDType => inner.KvStorageDType;

        public string Device => inner.Device;

        public bool ComputesOnHostCores => inner.ComputesOnHostCores;

        public IInferenceSession CreateSession(int capacity = 0) => throw new InsufficientMemoryException("no memory for a session");

        public void Dispose()
        {
            // The fixture owns the model.
        }
    }
}
