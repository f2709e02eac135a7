using KvFetcher.Store;
using KvFetcher.Store.Remote;
using KvFetcher.Store.Tests;

namespace KvFetcher.Server.Tests;

/// <summary>Many clients at once: nothing acknowledged is lost, nothing torn or foreign is ever read.</summary>
public sealed class ConcurrencyTests
{
    private const int Clients = 32;
    private const int OwnKeysPerClient = 4;
    private const int SharedKeys = 4;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task MixedTraffic_32Clients_EveryAcknowledgedPutReadableByteExact()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        ObjectKey[] shared = [.. Enumerable.Range(0, SharedKeys).Select(i => TestObjects.KeyFor($"shared-{i}"))];
        var sharedSeeds = new System.Collections.Concurrent.ConcurrentDictionary<int, bool>(); // every seed ever put on a shared key
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        stop.CancelAfter(TimeSpan.FromSeconds(4));

        var workers = new Task<Dictionary<ObjectKey, int?>>[Clients];
        for (int c = 0; c < Clients; c++)
        {
            int client = c;
            workers[c] = Task.Run(() => RunClientAsync(harness, client, shared, sharedSeeds, stop.Token), Ct);
        }

        Dictionary<ObjectKey, int?>[] models = await Task.WhenAll(workers);
        Assert.True(models.Sum(m => m.Count) == Clients * OwnKeysPerClient);

        // After the storm: every client's own keys hold exactly what it last had acknowledged (or nothing if deleted).
        await using HttpKvStore reader = harness.Client();
        int present = 0;
        foreach (Dictionary<ObjectKey, int?> model in models)
        {
            foreach ((ObjectKey key, int? seed) in model)
            {
                byte[]? bytes = await reader.GetBytesAsync(key, cancellationToken: Ct);
                if (seed is null)
                {
                    Assert.Null(bytes);
                }
                else
                {
                    Assert.Equal(TestObjects.Container(key, PayloadOf(seed.Value), seed.Value), bytes);
                    present++;
                }
            }
        }

        foreach (ObjectKey key in shared)
        {
            byte[]? bytes = await reader.GetBytesAsync(key, cancellationToken: Ct);
            if (bytes is not null)
            {
                Assert.True(TestObjects.IsFor(bytes, key, out int seed));
                Assert.True(sharedSeeds.ContainsKey(seed));
            }
        }

        Assert.True(present > 0);
        Assert.Equal(0, (await reader.GetStatsAsync(Ct)).CorruptObjects);
    }

    /// <summary>
    /// One client's loop: puts, gets and deletes on its own keys (checked against its model at every read) and puts and
    /// gets on shared keys (every read must be an intact container for that key with a seed someone put).
    /// </summary>
    private static async Task<Dictionary<ObjectKey, int?>> RunClientAsync(ServerHarness harness, int client, ObjectKey[] shared, System.Collections.Concurrent.ConcurrentDictionary<int, bool> sharedSeeds, CancellationToken stop)
    {
        await using HttpKvStore store = harness.Client();
        var random = new Random(client);
        var model = new Dictionary<ObjectKey, int?>();
        ObjectKey[] own = [.. Enumerable.Range(0, OwnKeysPerClient).Select(i => TestObjects.KeyFor($"client-{client}-{i}"))];
        foreach (ObjectKey key in own)
        {
            model[key] = null;
        }

        int version = 0;
        while (!stop.IsCancellationRequested)
        {
            int seed = (client * 1_000_000) + version++;
            int op = random.Next(10);
            if (op < 7)
            {
                ObjectKey key = own[random.Next(own.Length)];
                if (op < 3)
                {
                    await store.PutAsync(key, TestObjects.Container(key, PayloadOf(seed), seed), Ct);
                    model[key] = seed;
                }
                else if (op < 6)
                {
                    byte[]? bytes = await store.GetBytesAsync(key, cancellationToken: Ct);
                    if (model[key] is int expected)
                    {
                        Assert.Equal(TestObjects.Container(key, PayloadOf(expected), expected), bytes);
                    }
                    else
                    {
                        Assert.Null(bytes);
                    }
                }
                else
                {
                    bool removed = await store.DeleteAsync(key, Ct);
                    Assert.Equal(model[key] is not null, removed);
                    model[key] = null;
                }
            }
            else
            {
                ObjectKey key = shared[random.Next(shared.Length)];
                if (op == 7)
                {
                    sharedSeeds[seed] = true;
                    await store.PutAsync(key, TestObjects.Container(key, PayloadOf(seed), seed), Ct);
                }
                else
                {
                    byte[]? bytes = await store.GetBytesAsync(key, cancellationToken: Ct);
                    if (bytes is not null)
                    {
                        Assert.True(TestObjects.IsFor(bytes, key, out int got), "a shared key returned bytes that are not its own intact container");
                        Assert.True(sharedSeeds.ContainsKey(got));
                    }
                }
            }
        }

        return model;
    }

    /// <summary>Object sizes from 1 KB to ~64 KB, a function of the seed so a reader can rebuild the expected bytes.</summary>
    private static int PayloadOf(int seed) => 1024 + (int)((long)seed * 7919 % (63 * 1024));
}
