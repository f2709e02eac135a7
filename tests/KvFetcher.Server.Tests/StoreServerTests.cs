using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using KvFetcher.Store;
using KvFetcher.Store.Remote;
using KvFetcher.Store.Tests;
using KvFetcher.Tests;

namespace KvFetcher.Server.Tests;

/// <summary>The HTTP API through <see cref="HttpKvStore"/> and raw requests, against a real server on loopback.</summary>
public sealed class StoreServerTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Get_EightMegabyteObject_ArrivesByteExact()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await using HttpKvStore client = harness.Client();
        ObjectKey key = TestObjects.KeyFor("large");
        byte[] container = TestObjects.Container(key, 8 << 20, seed: 3);
        await client.PutAsync(key, container, Ct);
        Assert.Equal(container, await client.GetBytesAsync(key, cancellationToken: Ct));
    }

    [Fact]
    public async Task Get_WholeObject_AnswersContentLengthOfObjectNotChunked()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await using HttpKvStore client = harness.Client();
        using HttpClient raw = harness.Raw();
        ObjectKey key = TestObjects.KeyFor("known-length");
        byte[] container = TestObjects.Container(key, 1 << 20, seed: 4);
        await client.PutAsync(key, container, Ct);

        using var request = new HttpRequestMessage(HttpMethod.Get, $"/v1/objects/{key}");
        using HttpResponseMessage response = await raw.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(container.Length, response.Content.Headers.ContentLength);
        Assert.NotEqual(true, response.Headers.TransferEncodingChunked);
        Assert.Equal(container, await response.Content.ReadAsByteArrayAsync(Ct));
    }

    [Fact]
    public async Task Get_RawRange_Answers206WithContentRange()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await using HttpKvStore client = harness.Client();
        using HttpClient raw = harness.Raw();
        ObjectKey key = TestObjects.KeyFor("raw-range");
        byte[] container = TestObjects.Container(key, 1000, seed: 2);
        await client.PutAsync(key, container, Ct);

        using var request = new HttpRequestMessage(HttpMethod.Get, $"/v1/objects/{key}");
        request.Headers.Range = new RangeHeaderValue(10, 19);
        using HttpResponseMessage response = await raw.SendAsync(request, Ct);
        Assert.Equal(HttpStatusCode.PartialContent, response.StatusCode);
        Assert.Equal($"bytes 10-19/{container.Length}", response.Content.Headers.ContentRange?.ToString());
        Assert.Equal(container[10..20], await response.Content.ReadAsByteArrayAsync(Ct));

        using var multi = new HttpRequestMessage(HttpMethod.Get, $"/v1/objects/{key}");
        multi.Headers.TryAddWithoutValidation("Range", "bytes=0-1,5-6");
        using HttpResponseMessage refused = await raw.SendAsync(multi, Ct);
        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);

        using HttpResponseMessage head = await raw.SendAsync(new HttpRequestMessage(HttpMethod.Head, $"/v1/objects/{key}"), Ct);
        Assert.Equal(HttpStatusCode.OK, head.StatusCode);
        Assert.Equal(container.Length, head.Content.Headers.ContentLength);
        using HttpResponseMessage headMiss = await raw.SendAsync(new HttpRequestMessage(HttpMethod.Head, $"/v1/objects/{TestObjects.KeyFor("absent")}"), Ct);
        Assert.Equal(HttpStatusCode.NotFound, headMiss.StatusCode);
    }

    [Fact]
    public async Task Lookup_StoredPrefixAndExistence_InOneJsonAnswer()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await using HttpKvStore client = harness.Client();
        ObjectKey[] chain = [.. Enumerable.Range(0, 6).Select(i => TestObjects.KeyFor($"chain-{i}"))];
        foreach (int i in (int[])[0, 1, 2, 4])
        {
            await client.PutAsync(chain[i], TestObjects.Container(chain[i], 100, i), Ct);
        }

        using HttpClient raw = harness.Raw();
        string body = JsonSerializer.Serialize(new { keys = chain.Select(k => k.Value).ToArray() });
        using HttpResponseMessage response = await raw.PostAsync("/v1/lookup", new StringContent(body, Encoding.UTF8, "application/json"), Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("{\"prefix\":3,\"exists\":[true,true,true,false,true,false]}", await response.Content.ReadAsStringAsync(Ct));
    }

    [Fact]
    public async Task Lookup_BadRequests_Answer400AndServerKeepsServing()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        using HttpClient raw = harness.Raw();
        string tooMany = JsonSerializer.Serialize(new { keys = Enumerable.Range(0, 4097).Select(i => $"k{i}").ToArray() });
        string[] bodies = ["{\"keys\":[\"ok\",\"../etc\"]}", "not json", "{}", "{\"keys\":5}", tooMany];
        foreach (string body in bodies)
        {
            using HttpResponseMessage response = await raw.PostAsync("/v1/lookup", new StringContent(body, Encoding.UTF8, "application/json"), Ct);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        }

        await AssertServingAsync(harness);
    }

    [Theory]
    [InlineData("..%2F..%2Fetc%2Fpasswd")]
    [InlineData("..%2Fobjects")]
    [InlineData(".hidden")]
    [InlineData("-dash")]
    [InlineData("a%20b")]
    [InlineData("a%00b")]
    [InlineData("a%2Fb")]
    [InlineData("caf%C3%A9")]
    public async Task AnyMethod_InvalidKey_Answers400AndWritesNothing(string key)
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        using HttpClient raw = harness.Raw();
        byte[] container = TestObjects.Container(TestObjects.KeyFor("x"), 100, 1);
        foreach (HttpMethod method in (HttpMethod[])[HttpMethod.Get, HttpMethod.Put, HttpMethod.Delete])
        {
            using var request = new HttpRequestMessage(method, "/v1/objects/" + key);
            if (method == HttpMethod.Put)
            {
                request.Content = new ByteArrayContent(container);
            }

            using HttpResponseMessage response = await raw.SendAsync(request, Ct);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        }

        Assert.Empty(harness.ObjectFiles());
        await AssertServingAsync(harness);
    }

    [Fact]
    public async Task Put_TooLongKey_Answers400()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        using HttpClient raw = harness.Raw();
        using HttpResponseMessage response = await raw.PutAsync("/v1/objects/" + new string('a', ObjectKey.MaxLength + 1), new ByteArrayContent(TestObjects.Container(TestObjects.KeyFor("x"), 10, 1)), Ct);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Empty(harness.ObjectFiles());
    }

    [Fact]
    public async Task Put_NotAContainer_Answers400AndClientRefusesLocally()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        using HttpClient raw = harness.Raw();
        ObjectKey key = TestObjects.KeyFor("bad-body");
        byte[] container = TestObjects.Container(key, 1000, 1);
        container[500] ^= 0x40; // checksum no longer holds

        foreach (byte[] body in (byte[][])[container, Encoding.UTF8.GetBytes("hello"), []])
        {
            using HttpResponseMessage response = await raw.PutAsync($"/v1/objects/{key}", new ByteArrayContent(body), Ct);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        }

        await using HttpKvStore client = harness.Client();
        await Assert.ThrowsAsync<ArgumentException>(async () => await client.PutAsync(key, container, Ct));
        Assert.Empty(harness.ObjectFiles());
        await AssertServingAsync(harness);
    }

    [Fact]
    public async Task Put_LargerThanTheLimit_Answers413AndClientSaysFull()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync(o => o with { MaxObjectBytes = 64 << 10 });
        ObjectKey key = TestObjects.KeyFor("too-big");
        byte[] container = TestObjects.Container(key, 100_000, 1);
        using HttpClient raw = harness.Raw();
        using HttpResponseMessage response = await raw.PutAsync($"/v1/objects/{key}", new ByteArrayContent(container), Ct);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);

        await using HttpKvStore client = harness.Client();
        await Assert.ThrowsAsync<KvStoreFullException>(async () => await client.PutAsync(key, container, Ct));
        Assert.Empty(harness.ObjectFiles());
        await AssertServingAsync(harness);
    }

    [Fact]
    public async Task Put_WithoutContentLength_Answers411()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        using HttpClient raw = harness.Raw();
        ObjectKey key = TestObjects.KeyFor("chunked");
        using var request = new HttpRequestMessage(HttpMethod.Put, $"/v1/objects/{key}") { Content = new StreamContent(new MemoryStream(TestObjects.Container(key, 100, 1))) };
        request.Headers.TransferEncodingChunked = true;
        using HttpResponseMessage response = await raw.SendAsync(request, Ct);
        Assert.Equal(HttpStatusCode.LengthRequired, response.StatusCode);
        await AssertServingAsync(harness);
    }

    [Fact]
    public async Task Put_DiskFullNothingToEvict_Answers507()
    {
        using var fs = KvFetcher.Store.Tests.Disk.SmallFilesystem.Mount(kibibytes: 512);
        var options = new StoreServerOptions { DataDirectory = Path.Combine(fs.Path, "store"), Token = ServerHarness.Token, Urls = ["http://127.0.0.1:0"] };
        await using StoreServer server = await StoreServer.StartAsync(options, Ct);
        fs.FillLeaving(64 << 10);
        ObjectKey key = TestObjects.KeyFor("disk-full");
        using var raw = new HttpClient { BaseAddress = server.Addresses[0] };
        raw.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", ServerHarness.Token);
        using HttpResponseMessage response = await raw.PutAsync($"/v1/objects/{key}", new ByteArrayContent(TestObjects.Container(key, 200_000, 1)), Ct);
        Assert.Equal(HttpStatusCode.InsufficientStorage, response.StatusCode);
        Assert.Contains("no space left", await response.Content.ReadAsStringAsync(Ct), StringComparison.Ordinal);
        using HttpResponseMessage small = await raw.PutAsync($"/v1/objects/{key}", new ByteArrayContent(TestObjects.Container(key, 1000, 1)), Ct);
        Assert.Equal(HttpStatusCode.NoContent, small.StatusCode);
    }

    [Fact]
    public async Task Put_StoreFull_Answers507AndClientSaysFull()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync(o => o with { CapacityBytes = 50_000 });
        await using HttpKvStore client = harness.Client();
        ObjectKey key = TestObjects.KeyFor("over-capacity");
        KvStoreFullException full = await Assert.ThrowsAsync<KvStoreFullException>(async () => await client.PutAsync(key, TestObjects.Container(key, 60_000, 1), Ct));
        Assert.Contains("507", full.Message, StringComparison.Ordinal);
        await AssertServingAsync(harness);
    }

    [Fact]
    public async Task Healthz_WithoutToken_Ok()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        using HttpClient raw = harness.Raw(token: null);
        using HttpResponseMessage response = await raw.GetAsync("/healthz", Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("ok\n", await response.Content.ReadAsStringAsync(Ct));
    }

    [Fact]
    public async Task Metrics_AfterTraffic_ExposesCountersAndHistograms()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync(o => o with { CapacityBytes = 10_000_000 });
        await using HttpKvStore client = harness.Client();
        ObjectKey key = TestObjects.KeyFor("metered");
        byte[] container = TestObjects.Container(key, 5000, 1);
        await client.PutAsync(key, container, Ct);
        Assert.NotNull(await client.GetBytesAsync(key, cancellationToken: Ct));
        Assert.Null(await client.GetBytesAsync(TestObjects.KeyFor("absent"), cancellationToken: Ct));

        using HttpClient raw = harness.Raw();
        using HttpResponseMessage response = await raw.GetAsync("/metrics", Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType, StringComparison.Ordinal);
        var scrape = MetricsScrape.Parse(await response.Content.ReadAsStringAsync(Ct));
        Assert.Equal(1, scrape.Value("kvfetch_store_hits_total"));
        Assert.Equal(1, scrape.Value("kvfetch_store_misses_total"));
        // Renamed for their unit (bytes): were kvfetch_store_bytes_in_total and kvfetch_store_bytes_out_total.
        Assert.Equal(container.Length, scrape.Value("kvfetch_store_written_bytes_total"));
        Assert.Equal(container.Length, scrape.Value("kvfetch_store_read_bytes_total"));
        Assert.Equal(container.Length, scrape.Value("kvfetch_store_used_bytes"));
        Assert.Equal(10_000_000, scrape.Value("kvfetch_store_capacity_bytes"));
        Assert.Equal(1, scrape.Value("kvfetch_store_objects"));
        Assert.Equal(0, scrape.Value("kvfetch_store_evictions_total"));
        Assert.Equal(0, scrape.Value("kvfetch_store_corrupt_objects_total"));
        Assert.Equal(container.Length, scrape.Value("kvfetch_http_sent_bytes_total"));
        Assert.Equal(container.Length, scrape.Value("kvfetch_http_received_bytes_total"));
        Assert.Equal(1, scrape.Value("kvfetch_http_requests_total", "route=put", "code=204"));
        Assert.Equal(1, scrape.Value("kvfetch_http_requests_total", "route=get", "code=200"));
        Assert.Equal(1, scrape.Value("kvfetch_http_requests_total", "route=get", "code=404"));
        Assert.Equal(2, scrape.Value("kvfetch_http_request_duration_seconds_bucket", "route=get", "le=+Inf"));
        Assert.Equal(1, scrape.Value("kvfetch_http_request_duration_seconds_count", "route=put"));
        Assert.Equal("histogram", scrape.TypeOf("kvfetch_http_request_duration_seconds"));
    }

    [Fact]
    public async Task Metrics_AfterTraffic_PassPromtoolCheck()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync(o => o with { CapacityBytes = 10_000_000 });
        await using HttpKvStore client = harness.Client();
        ObjectKey key = TestObjects.KeyFor("linted");
        await client.PutAsync(key, TestObjects.Container(key, 5000, 1), Ct);
        Assert.NotNull(await client.GetBytesAsync(key, cancellationToken: Ct));
        using HttpClient raw = harness.Raw();

        var scrape = MetricsScrape.Parse(await raw.GetStringAsync("/metrics", Ct));
        (int ExitCode, string Output)? check = await scrape.PromtoolCheckAsync(Ct);

        Assert.SkipWhen(check is null, "promtool is not installed (Debian package prometheus, or set $PROMTOOL)");
        Assert.True(check!.Value.ExitCode == 0 && check.Value.Output.Trim().Length == 0, $"promtool check metrics:\n{check.Value.Output}\n{scrape.Text}");
    }

    [Fact]
    public async Task Cleartext_H2cClientAgainstH2cServer_RoundTrips()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync(o => o with { CleartextProtocols = Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http2 });
        await using HttpKvStore client = harness.Client(version: HttpVersion.Version20);
        ObjectKey key = TestObjects.KeyFor("h2c");
        byte[] container = TestObjects.Container(key, 1 << 20, 4);
        await client.PutAsync(key, container, Ct);
        Assert.Equal(container, await client.GetBytesAsync(key, cancellationToken: Ct));
    }

    /// <summary>The server still answers: health, and a put and get of a fresh object.</summary>
    internal static async Task AssertServingAsync(ServerHarness harness)
    {
        await using HttpKvStore client = harness.Client();
        ObjectKey key = TestObjects.KeyFor("still-serving-" + Guid.NewGuid().ToString("N"));
        byte[] container = TestObjects.Container(key, 100, 9);
        await client.PutAsync(key, container, Ct);
        Assert.Equal(container, await client.GetBytesAsync(key, cancellationToken: Ct));
        Assert.True(await client.DeleteAsync(key, Ct));
    }
}
