using KvFetcher.Fetch;
using KvFetcher.Serving.Chat;

namespace KvFetcher.Serving.Tests;

/// <summary>A context stored for one tenant is never reused for another; the same tenant reuses it.</summary>
public sealed class TenantIsolationTests(ServingFixture fixture) : IClassFixture<ServingFixture>, IAsyncDisposable
{
    private const string KeyA = "tenant-a-key-0123456789";
    private const string KeyB = "tenant-b-key-0123456789";

    private readonly string _directory = Directory.CreateTempSubdirectory("kvf-serving-tenants-").FullName;

    public ValueTask DisposeAsync()
    {
        Directory.Delete(_directory, recursive: true);
        return ValueTask.CompletedTask;
    }

    [Fact]
    public async Task TenantFromKey_OtherKey_ReusesNothingAndSameKeyReuses()
    {
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(_directory),
            o => o with { ApiKeys = [KeyA, KeyB], TenantFromKey = true });
        ChatTurn[] turns = fixture.Question("What is this about?");

        Assert.Equal(0, (await server.ChatAsync(turns, 4, apiKey: KeyA)).ReusedTokens);
        await server.Engine.WhenPublishedAsync();
        ChatAnswer other = await server.ChatAsync(turns, 4, apiKey: KeyB);
        await server.Engine.WhenPublishedAsync();
        ChatAnswer same = await server.ChatAsync(turns, 4, apiKey: KeyA);

        Assert.Equal(0, other.ReusedTokens);
        Assert.True(same.ReusedTokens >= 3 * 256, $"reused {same.ReusedTokens}");
        Assert.Equal(other.Text, same.Text);
        Assert.NotEqual(other.KvFetcher.GetProperty("tenant").GetString(), same.KvFetcher.GetProperty("tenant").GetString());

        // Without a key (or with an unknown one) there is no tenant to serve.
        using HttpResponseMessage anonymous = await server.PostAsync("v1/chat/completions", """{"messages":[{"role":"user","content":"hi"}]}""");
        Assert.Equal(System.Net.HttpStatusCode.Unauthorized, anonymous.StatusCode);
        using HttpResponseMessage unknown = await server.PostAsync("v1/chat/completions", """{"messages":[{"role":"user","content":"hi"}]}""", apiKey: "not-a-known-key-123");
        Assert.Equal(System.Net.HttpStatusCode.Unauthorized, unknown.StatusCode);
    }

    [Fact]
    public async Task TenantHeader_OtherTenant_ReusesNothingAndSameTenantReuses()
    {
        await using LlmHarness server = await LlmHarness.StartAsync(fixture.EngineOptions(_directory));
        ChatTurn[] turns = fixture.Question("Which commands are shown?");

        Assert.Equal(0, (await server.ChatAsync(turns, 4, tenant: "alpha")).ReusedTokens);
        await server.Engine.WhenPublishedAsync();
        Assert.Equal(0, (await server.ChatAsync(turns, 4, tenant: "beta")).ReusedTokens);
        Assert.Equal(0, (await server.ChatAsync(turns, 4)).ReusedTokens);
        await server.Engine.WhenPublishedAsync();
        Assert.True((await server.ChatAsync(turns, 4, tenant: "alpha")).ReusedTokens >= 3 * 256);

        using HttpResponseMessage bad = await server.PostAsync("v1/chat/completions", """{"messages":[{"role":"user","content":"hi"}]}""", tenant: "key:forged");
        Assert.Equal(System.Net.HttpStatusCode.BadRequest, bad.StatusCode);
    }

    [Fact]
    public async Task ChunkKeys_DifferentTenants_Differ()
    {
        int[] tokens = fixture.ChatTokens(fixture.Question("q"));
        await using Store.Disk.DiskKvStore disk = Store.Disk.DiskKvStore.Open(new Store.Disk.DiskKvStoreOptions { Directory = _directory });
        await using var reuse = new KvReuse(fixture.Model, disk);
        ContextPlan a = reuse.Plan(tokens, TenantSalts.ForKey(KeyA));
        ContextPlan b = reuse.Plan(tokens, TenantSalts.ForKey(KeyB));
        ContextPlan named = reuse.Plan(tokens, "alpha");

        Assert.Equal(a.Keys.Length, b.Keys.Length);
        Assert.All(Enumerable.Range(0, a.Keys.Length), i =>
        {
            Assert.NotEqual(a.Keys[i], b.Keys[i]);
            Assert.NotEqual(a.Keys[i], named.Keys[i]);
        });
    }
}
