using System.Buffers;
using KvFetcher.Core.Containers;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Store.Disk;

namespace KvFetcher.Fetch.Tests;

/// <summary>
/// KV poisoning by someone who can write to the store: containers with other KV under the right key, model and
/// position and a recomputed checksum. With a deployment secret they are misses (computed, same answer as a full
/// prefill); without one they would be restored, which is what the secret is for.
/// </summary>
public sealed class ChunkAuthenticationTests(ReuseFixture fixture) : IClassFixture<ReuseFixture>, IAsyncDisposable
{
    private static readonly ChunkAuthenticator s_secret = new(Enumerable.Repeat((byte)7, 32).ToArray());
    private static readonly ChunkAuthenticator s_attackerSecret = new(Enumerable.Repeat((byte)9, 32).ToArray());
    private readonly string _directory = Directory.CreateTempSubdirectory("kvf-auth-").FullName;
    private DiskKvStore? _store;

    public async ValueTask DisposeAsync()
    {
        if (_store is not null)
        {
            await _store.DisposeAsync();
        }

        Directory.Delete(_directory, recursive: true);
    }

    [Theory]
    [InlineData("unsealed")]
    [InlineData("attacker-secret")]
    [InlineData("other-tenant")]
    public async Task Prefill_ForgedChunksWithSecret_ComputedAndAnswerIdenticalToFullPrefill(string forgery)
    {
        var options = new ReuseOptions { Ladder = [KvVariant.Raw], TenantSalt = "acme", Authenticator = s_secret };
        await using KvReuse reuse = await WarmAsync(options);
        ContextPlan plan = reuse.Plan(fixture.Tokens);
        ChunkMacKey? forger = forgery switch
        {
            "unsealed" => null,
            "attacker-secret" => s_attackerSecret.ForTenant("acme"),
            _ => s_secret.ForTenant("other"), // a chunk sealed for another tenant, relabelled as this one's
        };
        await ForgeAsync(plan, [0, 2], forger);

        (PrefillReport report, float[] logits, byte[] kv) = await PrefillAsync(reuse);

        Assert.Equal(2, report.FailedChunks);
        Assert.Equal(2, report.RestoredChunks);
        Assert.Equal(fixture.FullLogits, logits);
        Assert.Equal(fixture.FullKv, kv);
    }

    [Fact]
    public async Task Prefill_ForgedChunksWithoutSecret_RestoredSoTheStoreMustBeTrusted()
    {
        // The threat the secret removes: the checksum is not a MAC, so a trusting reader restores forged KV.
        await using KvReuse reuse = await WarmAsync(new ReuseOptions { Ladder = [KvVariant.Raw], TenantSalt = "acme" });
        await ForgeAsync(reuse.Plan(fixture.Tokens), [0, 2], mac: null);

        (PrefillReport report, _, byte[] kv) = await PrefillAsync(reuse);

        Assert.Equal(4, report.RestoredChunks);
        Assert.NotEqual(fixture.FullKv, kv);
    }

    [Fact]
    public async Task Prefill_SealedChunks_BitIdenticalReuse()
    {
        await using KvReuse reuse = await WarmAsync(new ReuseOptions { Ladder = [KvVariant.Raw, KvVariant.Exact], TenantSalt = "acme", Authenticator = s_secret });

        (PrefillReport report, float[] logits, byte[] kv) = await PrefillAsync(reuse, PrefillStrategy.FetchOnly(KvVariant.Exact));

        Assert.Equal(4, report.RestoredChunks);
        Assert.Equal(fixture.FullLogits, logits);
        Assert.Equal(fixture.FullKv, kv);
    }

    [Fact]
    public async Task Prefill_ChunksSealedUnderARetiredSecret_ComputedThenResealed()
    {
        await using (await WarmAsync(new ReuseOptions { Ladder = [KvVariant.Raw], TenantSalt = "acme", Authenticator = s_attackerSecret }))
        {
        }

        await _store!.DisposeAsync();
        await using KvReuse rotated = await OpenAsync(new ReuseOptions { Ladder = [KvVariant.Raw], TenantSalt = "acme", Authenticator = s_secret });

        (PrefillReport first, float[] logits, byte[] kv) = await PrefillAsync(rotated, publish: true);
        await rotated.Publisher.WhenIdleAsync();
        (PrefillReport second, float[] again, _) = await PrefillAsync(rotated);

        Assert.Equal(4, first.StoredChunks);
        Assert.Equal(0, first.RestoredChunks);
        Assert.Equal(fixture.FullLogits, logits);
        Assert.Equal(fixture.FullKv, kv);
        Assert.Equal(4, rotated.Publisher.Published); // exactly the refused variants, replaced
        Assert.Equal(4, second.RestoredChunks);
        Assert.Equal(fixture.FullLogits, again);
    }

    /// <summary>Replaces chunks' raw containers by random KV with the right header and a valid checksum.</summary>
    private async Task ForgeAsync(ContextPlan plan, int[] chunks, ChunkMacKey? mac)
    {
        var random = new Random(42);
        foreach (int chunk in chunks)
        {
            byte[] kv = new byte[plan.ChunkBytes];
            random.NextBytes(kv);
            for (int i = 1; i < kv.Length; i += 2)
            {
                kv[i] &= 0x3b; // finite fp16 values of modest size
            }

            var container = new ArrayBufferWriter<byte>();
            ChunkContainer.Write(plan.Header(chunk, KvVariant.Raw), [], kv, container, mac);
            await _store!.PutAsync(plan.ObjectKeyOf(chunk, KvVariant.Raw), container.WrittenMemory, TestContext.Current.CancellationToken);
        }
    }

    private async Task<KvReuse> WarmAsync(ReuseOptions options)
    {
        KvReuse reuse = await OpenAsync(options);
        await reuse.WarmAsync(fixture.Tokens, TestContext.Current.CancellationToken);
        return reuse;
    }

    private Task<KvReuse> OpenAsync(ReuseOptions options)
    {
        _store = DiskKvStore.Open(new DiskKvStoreOptions { Directory = _directory, Fsync = false });
        return Task.FromResult(new KvReuse(fixture.Model, _store, options));
    }

    private async Task<(PrefillReport Report, float[] Logits, byte[] Kv)> PrefillAsync(KvReuse reuse, PrefillStrategy? strategy = null, bool publish = false)
    {
        using var session = fixture.Model.CreateSession(ReuseFixture.PromptTokens);
        var logits = new float[fixture.Model.Config.VocabSize];
        PrefillReport report = await reuse.PrefillAsync(session, fixture.Tokens, strategy ?? PrefillStrategy.FetchOnly(KvVariant.Raw), logits, publish,
            TestContext.Current.CancellationToken);
        return (report, logits, ReuseFixture.Export(session));
    }
}
