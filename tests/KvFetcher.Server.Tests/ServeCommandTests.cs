using System.Collections.Concurrent;
using KvFetcher.Store;
using KvFetcher.Store.Remote;
using KvFetcher.Store.Tests;

namespace KvFetcher.Server.Tests;

/// <summary><c>kvfetch serve</c> as a user runs it: errors, signals, and a hard kill in the middle of writes.</summary>
public sealed class ServeCommandTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Serve_NoToken_ExitsNonZeroWithOneLine()
    {
        string directory = ServerHarness.NewTempDirectory();
        using ServeProcess serve = ServeProcess.Start("--data", directory, "--urls", "http://127.0.0.1:0");
        Assert.Equal(1, await serve.WaitForExitAsync(Ct));
        Assert.Equal("kvfetch: error: A bearer token is required (or allow anonymous access, on loopback URLs only).", serve.Error.Trim());
        Assert.False(Directory.Exists(directory));
    }

    [Fact]
    public async Task Serve_BadCapacity_ExitsNonZeroWithOneLine()
    {
        string directory = ServerHarness.NewTempDirectory();
        using ServeProcess serve = ServeProcess.Start("--data", directory, "--allow-anonymous", "--capacity", "lots");
        Assert.Equal(1, await serve.WaitForExitAsync(Ct));
        Assert.Equal("kvfetch: error: --capacity 'lots' is not a size such as 500MB, 10GB or 2GiB.", serve.Error.Trim());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Serve_PublicMetricsOption_OpensOnlyMetrics(bool publicMetrics)
    {
        string directory = ServerHarness.NewTempDirectory();
        string tokenFile = Path.Combine(Path.GetTempPath(), "kvf-token-" + Guid.NewGuid().ToString("N"));
        await File.WriteAllTextAsync(tokenFile, ServerHarness.Token + "\n", Ct);
        try
        {
            string[] args = ["--data", directory, "--token-file", tokenFile, "--urls", "http://127.0.0.1:0"];
            using ServeProcess serve = ServeProcess.Start(publicMetrics ? [.. args, "--public-metrics"] : args);
            Uri address = await serve.WaitForAddressAsync(Ct);
            Assert.Equal(publicMetrics ? 200 : 401, await KvFetcher.Tests.RouteWalk.SendAsync(address, "GET", "/metrics", token: null, cancellationToken: Ct));
            Assert.Equal(401, await KvFetcher.Tests.RouteWalk.SendAsync(address, "GET", "/V1/stats", token: null, cancellationToken: Ct));
            Assert.Equal(200, await KvFetcher.Tests.RouteWalk.SendAsync(address, "GET", "/V1/stats", ServerHarness.Token, cancellationToken: Ct));
            Assert.Equal(200, await KvFetcher.Tests.RouteWalk.SendAsync(address, "GET", "/healthz", token: null, cancellationToken: Ct));
        }
        finally
        {
            ServerHarness.DeleteDirectory(directory);
            File.Delete(tokenFile);
        }
    }

    [Fact]
    public async Task Serve_Sigterm_StopsGracefullyWithExitZero()
    {
        string directory = ServerHarness.NewTempDirectory();
        try
        {
            using ServeProcess serve = ServeProcess.Start("--data", directory, "--allow-anonymous", "--urls", "http://127.0.0.1:0", "--capacity", "1MB");
            Uri address = await serve.WaitForAddressAsync(Ct);
            await using (var client = new HttpKvStore(new HttpKvStoreOptions { BaseAddress = address }))
            {
                ObjectKey key = TestObjects.KeyFor("cli");
                byte[] container = TestObjects.Container(key, 1000, 1);
                await client.PutAsync(key, container, Ct);
                Assert.Equal(container, await client.GetBytesAsync(key, cancellationToken: Ct));
                Assert.Equal(1_000_000, (await client.GetStatsAsync(Ct)).CapacityBytes);
            }

            serve.Signal("TERM");
            Assert.Equal(0, await serve.WaitForExitAsync(Ct));
            Assert.Contains("stopping", serve.Error, StringComparison.Ordinal);
        }
        finally
        {
            ServerHarness.DeleteDirectory(directory);
        }
    }

    [Fact]
    public async Task Serve_KilledDuringPuts_RestartKeepsEveryAcknowledgedPutAndNoTornObject()
    {
        string directory = ServerHarness.NewTempDirectory();
        string tokenFile = Path.Combine(Path.GetTempPath(), "kvf-token-" + Guid.NewGuid().ToString("N"));
        await File.WriteAllTextAsync(tokenFile, ServerHarness.Token + "\n", Ct);
        var acknowledged = new ConcurrentDictionary<ObjectKey, int>();
        var attempted = new ConcurrentDictionary<ObjectKey, int>();
        try
        {
            using (ServeProcess first = ServeProcess.Start("--data", directory, "--token-file", tokenFile, "--urls", "http://127.0.0.1:0"))
            {
                Uri address = await first.WaitForAddressAsync(Ct);
                using var enough = new SemaphoreSlim(0);
                var writers = new Task[8];
                for (int w = 0; w < writers.Length; w++)
                {
                    int writer = w;
                    writers[w] = Task.Run(async () =>
                    {
                        await using var client = new HttpKvStore(new HttpKvStoreOptions { BaseAddress = address, Token = ServerHarness.Token, RequestTimeout = TimeSpan.FromSeconds(5) });
                        for (int n = 0; ; n++)
                        {
                            ObjectKey key = TestObjects.KeyFor($"burst-{writer}-{n}");
                            int seed = (writer * 100_000) + n;
                            attempted[key] = seed;
                            try
                            {
                                await client.PutAsync(key, TestObjects.Container(key, 20_000 + (n % 7 * 10_000), seed), Ct);
                            }
                            catch (KvStoreException)
                            {
                                return; // the server died under this put
                            }

                            acknowledged[key] = seed;
                            if (acknowledged.Count == 150)
                            {
                                enough.Release();
                            }
                        }
                    }, Ct);
                }

                Assert.True(await enough.WaitAsync(TimeSpan.FromSeconds(60), Ct), "the burst of puts never got going");
                first.KillHard();
                await Task.WhenAll(writers).WaitAsync(TimeSpan.FromSeconds(60), Ct);
            }

            Assert.True(attempted.Count > acknowledged.Count); // puts were in flight at the kill

            using ServeProcess second = ServeProcess.Start("--data", directory, "--token-file", tokenFile, "--urls", "http://127.0.0.1:0");
            Uri restarted = await second.WaitForAddressAsync(Ct);
            await using var reader = new HttpKvStore(new HttpKvStoreOptions { BaseAddress = restarted, Token = ServerHarness.Token });
            int present = 0;
            foreach ((ObjectKey key, int seed) in attempted)
            {
                byte[]? bytes = await reader.GetBytesAsync(key, cancellationToken: Ct);
                byte[] expected = TestObjects.Container(key, 20_000 + (seed % 100_000 % 7 * 10_000), seed);
                if (acknowledged.ContainsKey(key))
                {
                    Assert.Equal(expected, bytes);
                }
                else if (bytes is not null)
                {
                    Assert.Equal(expected, bytes); // finished but unacknowledged: whole, never torn
                }

                present += bytes is null ? 0 : 1;
            }

            StoreStats stats = await reader.GetStatsAsync(Ct);
            Assert.Equal(present, stats.Objects);
            Assert.Equal(0, stats.CorruptObjects);
        }
        finally
        {
            ServerHarness.DeleteDirectory(directory);
            File.Delete(tokenFile);
        }
    }
}
