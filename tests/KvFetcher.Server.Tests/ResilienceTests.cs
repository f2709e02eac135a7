using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using KvFetcher.Store;
using KvFetcher.Store.Remote;
using KvFetcher.Store.Tests;

namespace KvFetcher.Server.Tests;

/// <summary>Failures: corrupt objects, a stopped or silent server, store hiccups, timeouts, shutdown, TLS.</summary>
public sealed class ResilienceTests
{
    /// <summary>Far beyond any healthy answer here; a call still running then has hung.</summary>
    private static readonly TimeSpan s_hang = TimeSpan.FromSeconds(30);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Get_StoredFileCorrupted_MissNeverWrongData()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await using HttpKvStore client = harness.Client();
        ObjectKey key = TestObjects.KeyFor("rotting");
        await PutThenCorruptAsync(harness, client, key, 50_000, at: 30_000);

        Assert.Null(await client.GetBytesAsync(key, cancellationToken: Ct));
        Assert.Equal(new[] { false }, await client.ExistsAsync([key], Ct)); // removed, not served again
        Assert.Equal(1, (await client.GetStatsAsync(Ct)).CorruptObjects);
        await StoreServerTests.AssertServingAsync(harness);
    }

    [Fact]
    public async Task Get_RawRequestForCorruptedSmallFile_Answers404WithoutItsBytes()
    {
        // Through a plain HttpClient, which verifies nothing: the server itself must refuse to serve the object. One
        // that fits the first slice the server reads is verified whole before the status line goes out.
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await using HttpKvStore client = harness.Client();
        using HttpClient raw = harness.Raw();
        ObjectKey key = TestObjects.KeyFor("rotting-raw");
        await PutThenCorruptAsync(harness, client, key, 100_000, at: 50_000);

        using HttpResponseMessage response = await raw.GetAsync($"/v1/objects/{key}", Ct);
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.True((await response.Content.ReadAsByteArrayAsync(Ct)).Length < 100);
        Assert.Equal(1, (await client.GetStatsAsync(Ct)).CorruptObjects);
    }

    [Fact]
    public async Task Get_RawRequestForCorruptedLargeFile_TornNeverComplete_Then404()
    {
        // A large object is sent while it is read, so its checksum is known only after its last byte: the server
        // aborts the connection, and a client that verifies nothing still never receives a complete body.
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await using HttpKvStore client = harness.Client();
        using HttpClient raw = harness.Raw();
        ObjectKey key = TestObjects.KeyFor("rotting-raw-large");
        await PutThenCorruptAsync(harness, client, key, 4 << 20, at: 3 << 20);

        await Assert.ThrowsAsync<HttpRequestException>(() => raw.GetByteArrayAsync($"/v1/objects/{key}", Ct));
        using HttpResponseMessage again = await raw.GetAsync($"/v1/objects/{key}", Ct); // discarded: now a clean miss
        Assert.Equal(HttpStatusCode.NotFound, again.StatusCode);
        Assert.Equal(1, (await client.GetStatsAsync(Ct)).CorruptObjects);
        await StoreServerTests.AssertServingAsync(harness);
    }

    [Fact]
    public async Task Get_CorruptedHeaderOfLargeFile_Answers404BeforeAnyByte()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await using HttpKvStore client = harness.Client();
        using HttpClient raw = harness.Raw();
        ObjectKey key = TestObjects.KeyFor("rotting-head");
        await PutThenCorruptAsync(harness, client, key, 4 << 20, at: 9); // the version field

        using HttpResponseMessage response = await raw.GetAsync($"/v1/objects/{key}", Ct);
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal(1, (await client.GetStatsAsync(Ct)).CorruptObjects);
    }

    [Fact]
    public async Task Get_LargeFileCorrupted_VerifyingClientMissNeverWrongData()
    {
        // The verifying client sees the torn answer as a failed connection, retries, and gets the clean miss.
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await using HttpKvStore client = harness.Client();
        ObjectKey key = TestObjects.KeyFor("rotting-large");
        await PutThenCorruptAsync(harness, client, key, 4 << 20, at: 2 << 20);

        Assert.Null(await client.GetBytesAsync(key, cancellationToken: Ct));
        Assert.Equal(1, (await client.GetStatsAsync(Ct)).CorruptObjects);
    }

    [Fact]
    public async Task Get_LargeIntactFile_StreamedWholeWithItsLength()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await using HttpKvStore client = harness.Client();
        using HttpClient raw = harness.Raw();
        ObjectKey key = TestObjects.KeyFor("large-intact");
        byte[] container = TestObjects.Container(key, (8 << 20) + 12_345, 3);
        await client.PutAsync(key, container, Ct);

        using HttpResponseMessage response = await raw.GetAsync($"/v1/objects/{key}", Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(container.Length, response.Content.Headers.ContentLength);
        Assert.Equal(container, await response.Content.ReadAsByteArrayAsync(Ct));
        Assert.Equal(0, (await client.GetStatsAsync(Ct)).CorruptObjects);
    }

    [Fact]
    public async Task Put_LargeCorruptBodyOverAnIntactObject_Answers400AndOldObjectKept()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await using HttpKvStore client = harness.Client();
        ObjectKey key = TestObjects.KeyFor("streamed-put-corrupt");
        byte[] old = TestObjects.Container(key, 1 << 20, 1);
        await client.PutAsync(key, old, Ct);
        byte[] corrupt = TestObjects.Container(key, 5 << 20, 2);
        corrupt[3 << 20] ^= 0x08; // the checksum fails only after the last byte has been written to disk

        using HttpClient raw = harness.Raw();
        using HttpResponseMessage response = await raw.PutAsync($"/v1/objects/{key}", new ByteArrayContent(corrupt), Ct);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(old, await client.GetBytesAsync(key, cancellationToken: Ct));
        Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(harness.DataDirectory, "tmp")));
    }

    [Fact]
    public async Task Put_ClientGoesAwayMidBody_NothingStoredNoTempFileServerServes()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        ObjectKey key = TestObjects.KeyFor("streamed-put-cut");
        byte[] container = TestObjects.Container(key, 2 << 20, 1);
        using (var socket = new TcpClient())
        {
            await socket.ConnectAsync(harness.Address.Host, harness.Address.Port, Ct);
            NetworkStream stream = socket.GetStream();
            string head = $"PUT /v1/objects/{key} HTTP/1.1\r\nHost: {harness.Address.Authority}\r\nAuthorization: Bearer {ServerHarness.Token}\r\n" +
                $"Content-Type: application/octet-stream\r\nContent-Length: {container.Length}\r\n\r\n";
            await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes(head), Ct);
            await stream.WriteAsync(container.AsMemory(0, container.Length / 3), Ct);
            await stream.FlushAsync(Ct);
            await Task.Delay(200, Ct); // the server is inside the body, its temp file open
        }

        // The abandoned put leaves neither an object nor a temp file, and frees its reservation.
        await using HttpKvStore client = harness.Client();
        DateTime until = DateTime.UtcNow + s_hang;
        while (Directory.GetFileSystemEntries(Path.Combine(harness.DataDirectory, "tmp")).Length > 0 && DateTime.UtcNow < until)
        {
            await Task.Delay(20, Ct);
        }

        Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(harness.DataDirectory, "tmp")));
        Assert.Null(await client.GetBytesAsync(key, cancellationToken: Ct));
        Assert.Equal(0, (await client.GetStatsAsync(Ct)).UsedBytes);
        await StoreServerTests.AssertServingAsync(harness);
    }

    /// <summary>Stores a container of <paramref name="size"/> payload bytes, then flips a bit of its file at <paramref name="at"/> (negative: from the end).</summary>
    private static async Task PutThenCorruptAsync(ServerHarness harness, HttpKvStore client, ObjectKey key, int size, int at)
    {
        byte[] container = TestObjects.Container(key, size, 1);
        await client.PutAsync(key, container, Ct);
        string file = harness.ObjectPath(key);
        byte[] onDisk = await File.ReadAllBytesAsync(file, Ct);
        Assert.Equal(container, onDisk);
        onDisk[at < 0 ? onDisk.Length + at : at] ^= 0x10;
        await File.WriteAllBytesAsync(file, onDisk, Ct);
    }

    [Fact]
    public async Task Get_RangeOfCorruptedFile_MissNeverWrongData()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await using HttpKvStore client = harness.Client();
        ObjectKey key = TestObjects.KeyFor("rotting-range");
        await PutThenCorruptAsync(harness, client, key, 50_000, at: -1); // the checksum itself

        Assert.Null(await client.GetBytesAsync(key, new ByteRange(0, 100), Ct));
    }

    [Fact]
    public async Task AnyCall_ServerStopped_ThrowsKvStoreExceptionWithoutHanging()
    {
        ServerHarness harness = await ServerHarness.StartAsync();
        await using HttpKvStore client = harness.Client(timeout: TimeSpan.FromSeconds(5));
        ObjectKey key = TestObjects.KeyFor("gone");
        byte[] container = TestObjects.Container(key, 100, 1);
        await client.PutAsync(key, container, Ct); // a pooled connection exists
        await harness.DisposeAsync();

        await Assert.ThrowsAsync<KvStoreException>(async () => await client.GetBytesAsync(key, cancellationToken: Ct).WaitAsync(s_hang, Ct));
        await Assert.ThrowsAsync<KvStoreException>(async () => await client.PutAsync(key, container, Ct).AsTask().WaitAsync(s_hang, Ct));
        await Assert.ThrowsAsync<KvStoreException>(async () => await client.LongestPrefixAsync([key], Ct).AsTask().WaitAsync(s_hang, Ct));
        await Assert.ThrowsAsync<KvStoreException>(async () => await client.DeleteAsync(key, Ct).AsTask().WaitAsync(s_hang, Ct));
        await Assert.ThrowsAsync<KvStoreException>(async () => await client.GetStatsAsync(Ct).AsTask().WaitAsync(s_hang, Ct));
    }

    [Fact]
    public async Task Get_ServerAcceptsButNeverAnswers_TimesOutAsKvStoreException()
    {
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        var accepted = new List<Socket>();
        Task acceptLoop = Task.Run(async () =>
        {
            while (true)
            {
                accepted.Add(await silent.AcceptSocketAsync(Ct));
            }
        }, Ct);
        await using var client = new HttpKvStore(new HttpKvStoreOptions
        {
            BaseAddress = new Uri($"http://127.0.0.1:{((IPEndPoint)silent.LocalEndpoint).Port}"),
            Token = ServerHarness.Token,
            RequestTimeout = TimeSpan.FromMilliseconds(300),
            MaxRetries = 1,
        });

        KvStoreException timeout = await Assert.ThrowsAsync<KvStoreException>(async () => await client.GetBytesAsync(TestObjects.KeyFor("x"), cancellationToken: Ct).WaitAsync(s_hang, Ct));
        Assert.Contains("no answer within", timeout.Message, StringComparison.Ordinal);
        Assert.Contains("after 2 attempts", timeout.Message, StringComparison.Ordinal);
        silent.Stop();
        accepted.ForEach(s => s.Dispose());
    }

    [Fact]
    public async Task Get_CallerCancels_OperationCanceledNotKvStoreException()
    {
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        await using var client = new HttpKvStore(new HttpKvStoreOptions { BaseAddress = new Uri($"http://127.0.0.1:{((IPEndPoint)silent.LocalEndpoint).Port}") });
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        cancel.CancelAfter(TimeSpan.FromMilliseconds(200));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await client.GetBytesAsync(TestObjects.KeyFor("x"), cancellationToken: cancel.Token).WaitAsync(s_hang, Ct));
    }

    [Fact]
    public async Task Get_StoreHiccupsOnce_ClientRetriesAndSucceeds()
    {
        FaultyStore? faulty = null;
        await using ServerHarness harness = await ServerHarness.StartAsync(wrap: inner => faulty = new FaultyStore(inner));
        await using HttpKvStore client = harness.Client();
        ObjectKey key = TestObjects.KeyFor("flaky");
        byte[] container = TestObjects.Container(key, 1000, 1);
        await client.PutAsync(key, container, Ct);

        faulty!.FailNextGets(1);
        Assert.Equal(container, await client.GetBytesAsync(key, cancellationToken: Ct));
        Assert.Equal(2, faulty.GetCalls);

        // More failures than retries: a KvStoreException that carries the server's 503.
        faulty.FailNextGets(3);
        KvStoreException failure = await Assert.ThrowsAsync<KvStoreException>(async () => await client.GetBytesAsync(key, cancellationToken: Ct));
        Assert.Contains("503", failure.Message, StringComparison.Ordinal);
        Assert.Equal(5, faulty.GetCalls);
    }

    [Fact]
    public async Task Get_StoreSlowerThanServerTimeout_Answers503AndKeepsServing()
    {
        FaultyStore? faulty = null;
        await using ServerHarness harness = await ServerHarness.StartAsync(o => o with { RequestTimeout = TimeSpan.FromMilliseconds(300) }, inner => faulty = new FaultyStore(inner));
        await using HttpKvStore client = harness.Client(maxRetries: 0);
        ObjectKey key = TestObjects.KeyFor("slow");
        await client.PutAsync(key, TestObjects.Container(key, 1000, 1), Ct);

        faulty!.GetGate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously); // never released
        KvStoreException failure = await Assert.ThrowsAsync<KvStoreException>(async () => await client.GetBytesAsync(key, cancellationToken: Ct));
        Assert.Contains("503", failure.Message, StringComparison.Ordinal);
        Assert.Contains("took longer than", failure.Message, StringComparison.Ordinal);
        faulty.GetGate = null;
        await StoreServerTests.AssertServingAsync(harness);
    }

    [Fact]
    public async Task StopAsync_RequestInFlight_FinishesItThenRefusesNewOnes()
    {
        FaultyStore? faulty = null;
        ServerHarness harness = await ServerHarness.StartAsync(wrap: inner => faulty = new FaultyStore(inner));
        try
        {
            await using HttpKvStore client = harness.Client(maxRetries: 0, timeout: TimeSpan.FromSeconds(20));
            ObjectKey key = TestObjects.KeyFor("in-flight");
            byte[] container = TestObjects.Container(key, 200_000, 1);
            await client.PutAsync(key, container, Ct);

            var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            faulty!.GetGate = gate;
            Task<byte[]?> get = client.GetBytesAsync(key, cancellationToken: Ct);
            await faulty.GetEntered.Task.WaitAsync(s_hang, Ct);

            Task stop = harness.Server.StopAsync(Ct);
            await Task.Delay(200, Ct);
            Assert.False(stop.IsCompleted); // waits for the request
            gate.SetResult();
            Assert.Equal(container, await get.WaitAsync(s_hang, Ct));
            await stop.WaitAsync(s_hang, Ct);

            faulty.GetGate = null;
            await Assert.ThrowsAsync<KvStoreException>(async () => await client.GetBytesAsync(key, cancellationToken: Ct));
        }
        finally
        {
            await harness.DisposeAsync();
        }
    }

    [Fact]
    public async Task Tls_TrustedSelfSignedCertificate_RoundTripsOverHttp2()
    {
        string directory = ServerHarness.NewTempDirectory();
        Directory.CreateDirectory(directory);
        (string certFile, string keyFile) = KvFetcher.Tests.TestCertificates.WriteSelfSigned(directory);
        await using ServerHarness harness = await ServerHarness.StartAsync(o => o with
        {
            Urls = ["https://127.0.0.1:0"],
            CertificateFile = certFile,
            CertificateKeyFile = keyFile,
        });
        try
        {
            Assert.Equal("https", harness.Address.Scheme);
            await using var client = new HttpKvStore(new HttpKvStoreOptions { BaseAddress = harness.Address, Token = ServerHarness.Token, TrustedCertificateFile = certFile });
            ObjectKey key = TestObjects.KeyFor("secure");
            byte[] container = TestObjects.Container(key, 1 << 20, 1);
            await client.PutAsync(key, container, Ct);
            Assert.Equal(container, await client.GetBytesAsync(key, cancellationToken: Ct));

            // The connection negotiated HTTP/2.
            using var handler = new SocketsHttpHandler();
            using X509Certificate2 expected = X509Certificate2.CreateFromPem(File.ReadAllText(certFile));
            handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, _) => certificate?.GetCertHashString() == expected.GetCertHashString();
            using var raw = new HttpClient(handler) { DefaultRequestVersion = HttpVersion.Version20 };
            using HttpResponseMessage health = await raw.GetAsync(new Uri(harness.Address, "/healthz"), Ct);
            Assert.Equal(HttpVersion.Version20, health.Version);

            // Without trusting the certificate, the client refuses the server.
            await using var untrusting = new HttpKvStore(new HttpKvStoreOptions { BaseAddress = harness.Address, Token = ServerHarness.Token, MaxRetries = 0 });
            await Assert.ThrowsAsync<KvStoreException>(async () => await untrusting.GetBytesAsync(key, cancellationToken: Ct));
        }
        finally
        {
            ServerHarness.DeleteDirectory(directory);
        }
    }
}
