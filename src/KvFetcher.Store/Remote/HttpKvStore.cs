using System.Buffers;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using KvFetcher.Core;
using KvFetcher.Core.Containers;

using KvFetcher.Store.Telemetry;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KvFetcher.Store.Remote;

/// <summary>
/// The client of KvFetcher's store server (<c>kvfetch serve</c>) over HTTP: pooled connections, a deadline per
/// attempt, retries with exponential backoff for reads only (get, lookup, stats), and every failure as
/// <see cref="KvStoreException"/>. A whole-object get is read straight into the destination and verified there before
/// it is committed: a body that fails its checksum is a miss. A ranged get cannot be verified on its own; the server
/// verified the whole object before sending the range. Thread-safe.
/// </summary>
public sealed class HttpKvStore : IKvStore
{
    private static readonly TimeSpan s_firstBackoff = TimeSpan.FromMilliseconds(50);
    private static readonly TimeSpan s_maxBackoff = TimeSpan.FromSeconds(1);
    private static readonly MediaTypeHeaderValue s_objectMediaType = new(StoreProtocol.ObjectMediaType);

    private readonly HttpKvStoreOptions _options;
    private readonly HttpClient _client;
    private readonly Uri _base;
    private readonly Version _version;
    private readonly HttpVersionPolicy _versionPolicy;
    private readonly X509Certificate2Collection? _trusted;
    private readonly ILogger _logger;
    private long _corruptBodies;
    private int _disposed;

    /// <param name="options">The server, token, deadlines and retries.</param>
    /// <param name="logger">Where retried attempts are logged; none by default.</param>
    public HttpKvStore(HttpKvStoreOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _logger = logger ?? NullLogger.Instance;
        string address = options.BaseAddress.AbsoluteUri;
        _base = new Uri(address.EndsWith('/') ? address : address + "/");
        Description = _base.AbsoluteUri.TrimEnd('/');
        bool tls = _base.Scheme == Uri.UriSchemeHttps;
        if (options.HttpVersion is { } version)
        {
            _version = version;
            _versionPolicy = HttpVersionPolicy.RequestVersionExact;
        }
        else
        {
            _version = tls ? HttpVersion.Version20 : HttpVersion.Version11;
            _versionPolicy = tls ? HttpVersionPolicy.RequestVersionOrLower : HttpVersionPolicy.RequestVersionExact;
        }

        if (options.TrustedCertificateFile is { } file)
        {
            _trusted = [];
            _trusted.ImportFromPemFile(file);
            if (_trusted.Count == 0)
            {
                throw new ArgumentException($"The trusted certificate file '{file}' holds no PEM certificate.", nameof(options));
            }
        }
        var handler = new SocketsHttpHandler
        {
            UseProxy = false,
            UseCookies = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            EnableMultipleHttp2Connections = true,
            ConnectTimeout = options.RequestTimeout,
            // Large objects: a stream window that lets one 8 MB object flow without waiting on window updates.
            InitialHttp2StreamWindowSize = 8 << 20,
        };
        if (_trusted is not null)
        {
            handler.SslOptions.RemoteCertificateValidationCallback = ValidateServerCertificate;
        }

        _client = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan };
        if (options.Token is { } token)
        {
            _client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }
    }

    public string Description { get; }

    /// <summary>Whole-object bodies that arrived but failed verification (reported as misses).</summary>
    public long CorruptBodies => Interlocked.Read(ref _corruptBodies);

    public async ValueTask PutAsync(ObjectKey key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        string name = CheckKey(key);
        if (!ChunkContainer.IsIntact(data.Span))
        {
            throw new ArgumentException($"Refusing to store '{name}': its {data.Length} bytes are not an intact chunk container.", nameof(data));
        }

        await RunAsync($"PUT {name}", retry: false, async deadline =>
        {
            using var request = NewRequest(HttpMethod.Put, StoreProtocol.ObjectPath(key));
            request.Content = new ReadOnlyMemoryContent(data);
            request.Content.Headers.ContentType = s_objectMediaType;
            using HttpResponseMessage response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, deadline);
            if (response.StatusCode is not (HttpStatusCode.NoContent or HttpStatusCode.OK))
            {
                throw await FailureAsync(response, $"PUT {name}", deadline);
            }

            return true;
        }, cancellationToken);
    }

    public async ValueTask<StoreRead> GetAsync(ObjectKey key, IBufferWriter<byte> destination, ByteRange range = default, CancellationToken cancellationToken = default)
    {
        string name = CheckKey(key);
        ArgumentNullException.ThrowIfNull(destination);
        if (range.Offset < 0 || range.Length < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(range), range, "A range needs a non-negative offset and length.");
        }

        if (range.Length == 0)
        {
            // HTTP cannot ask for zero bytes; HEAD tells whether the object is there (verified) and how long it is.
            StoreRead head = await RunAsync($"HEAD {name}", retry: true, deadline => WithIdleTimeoutAsync($"HEAD {name}", idle => HeadAttemptAsync(key, idle), deadline), cancellationToken);
            if (head.Found && range.Offset > head.ObjectLength)
            {
                throw new ArgumentOutOfRangeException(nameof(range), range, $"The range lies outside '{name}' ({head.ObjectLength} bytes).");
            }

            return head;
        }

        return await RunAsync($"GET {name}", retry: true, deadline => WithIdleTimeoutAsync($"GET {name}", idle => GetAttemptAsync(key, destination, range, idle), deadline), cancellationToken);
    }

    public async ValueTask<bool[]> ExistsAsync(IReadOnlyList<ObjectKey> keys, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(keys);
        var exists = new bool[keys.Count];
        for (int start = 0; start < keys.Count; start += StoreProtocol.MaxLookupKeys)
        {
            int count = Math.Min(StoreProtocol.MaxLookupKeys, keys.Count - start);
            LookupResponse answer = await LookupAsync(keys, start, count, cancellationToken);
            answer.Exists.CopyTo(exists, start);
        }

        return exists;
    }

    public async ValueTask<int> LongestPrefixAsync(IReadOnlyList<ObjectKey> chain, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(chain);
        int prefix = 0;
        while (prefix < chain.Count)
        {
            int count = Math.Min(StoreProtocol.MaxLookupKeys, chain.Count - prefix);
            LookupResponse answer = await LookupAsync(chain, prefix, count, cancellationToken);
            prefix += answer.Prefix;
            if (answer.Prefix < count)
            {
                break;
            }
        }

        return prefix;
    }

    public async ValueTask<bool> DeleteAsync(ObjectKey key, CancellationToken cancellationToken = default)
    {
        string name = CheckKey(key);
        return await RunAsync($"DELETE {name}", retry: false, async deadline =>
        {
            using var request = NewRequest(HttpMethod.Delete, StoreProtocol.ObjectPath(key));
            using HttpResponseMessage response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, deadline);
            return response.StatusCode switch
            {
                HttpStatusCode.NoContent or HttpStatusCode.OK => true,
                HttpStatusCode.NotFound => false,
                _ => throw await FailureAsync(response, $"DELETE {name}", deadline),
            };
        }, cancellationToken);
    }

    /// <summary>The server's store statistics.</summary>
    public async ValueTask<StoreStats> GetStatsAsync(CancellationToken cancellationToken = default) =>
        await RunAsync("GET stats", retry: true, async deadline =>
        {
            using var request = NewRequest(HttpMethod.Get, StoreProtocol.StatsPath);
            using HttpResponseMessage response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, deadline);
            if (response.StatusCode != HttpStatusCode.OK)
            {
                throw await FailureAsync(response, "GET stats", deadline);
            }

            return await ReadJsonAsync(response, StoreProtocolJson.Default.StoreStats, "GET stats", deadline);
        }, cancellationToken);

    public ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _client.Dispose();
            foreach (X509Certificate2 certificate in _trusted ?? [])
            {
                certificate.Dispose();
            }
        }

        return ValueTask.CompletedTask;
    }

    public override string ToString() => Description;

    private async Task<StoreRead> GetAttemptAsync(ObjectKey key, IBufferWriter<byte> destination, ByteRange range, IdleDeadline idle)
    {
        string name = key.Value;
        CancellationToken deadline = idle.Token;
        using var request = NewRequest(HttpMethod.Get, StoreProtocol.ObjectPath(key));
        if (!range.IsAll)
        {
            request.Headers.Range = StoreProtocol.RangeHeader(range);
        }

        using HttpResponseMessage response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, deadline);
        switch (response.StatusCode)
        {
            case HttpStatusCode.NotFound:
                return StoreRead.Miss;
            case HttpStatusCode.RequestedRangeNotSatisfiable:
                throw new ArgumentOutOfRangeException(nameof(range), range, $"The range lies outside '{name}'.");
            case HttpStatusCode.OK when range.IsAll:
            case HttpStatusCode.PartialContent when !range.IsAll:
                break;
            default:
                throw await FailureAsync(response, $"GET {name}", deadline);
        }

        if (response.Content.Headers.ContentLength is not long bodyLength || bodyLength < 0 || bodyLength > Array.MaxLength)
        {
            throw new KvStoreException($"{Description}: GET {name}: the answer has no usable Content-Length.");
        }

        long objectLength = bodyLength;
        if (!range.IsAll)
        {
            ContentRangeHeaderValue? served = response.Content.Headers.ContentRange;
            if (served?.From != range.Offset || served.Length is not long total || (range.Length is long wanted && wanted != bodyLength))
            {
                throw new KvStoreException($"{Description}: GET {name}: the server answered range '{served}' to {request.Headers.Range}.");
            }

            objectLength = total;
        }

        int size = (int)bodyLength;
        idle.Progress();
        await using Stream body = await response.Content.ReadAsStreamAsync(deadline);
        Memory<byte> target = destination.GetMemory(size);
        if (target.Length >= size)
        {
            // Straight into the caller's buffer; committed only once verified.
            if (!await ReadVerifiedAsync(body, target[..size], range, idle))
            {
                return StoreRead.Miss;
            }

            destination.Advance(size);
        }
        else
        {
            // The destination cannot give one contiguous block this large: verify in a pooled one, then copy.
            byte[] scratch = ArrayPool<byte>.Shared.Rent(size);
            try
            {
                if (!await ReadVerifiedAsync(body, scratch.AsMemory(0, size), range, idle))
                {
                    return StoreRead.Miss;
                }

                for (int done = 0; done < size;)
                {
                    Span<byte> span = destination.GetSpan(1);
                    int n = Math.Min(span.Length, size - done);
                    scratch.AsSpan(done, n).CopyTo(span);
                    destination.Advance(n);
                    done += n;
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(scratch);
            }
        }

        return new StoreRead(Found: true, ObjectLength: objectLength, BytesWritten: size);
    }

    /// <summary>
    /// Reads the whole body into <paramref name="target"/>; a whole object is verified as it arrives (header and
    /// checksum, hashed piece by piece while the rest is still on the wire), a range is the caller's to check. False:
    /// the object is corrupt (counted; the caller answers a miss).
    /// </summary>
    private async Task<bool> ReadVerifiedAsync(Stream body, Memory<byte> target, ByteRange range, IdleDeadline idle)
    {
        if (!range.IsAll)
        {
            await ReadBodyAsync(body, target, idle, check: null);
            return true;
        }

        try
        {
            var check = new ContainerStreamCheck(target.Length);
            await ReadBodyAsync(body, target, idle, check);
            check.Complete();
            return true;
        }
        catch (InvalidKvDataException)
        {
            Interlocked.Increment(ref _corruptBodies);
            return false;
        }
    }

    /// <summary>Reads the whole body into <paramref name="target"/>, restarting the idle clock on every piece that arrives.</summary>
    private static async Task ReadBodyAsync(Stream body, Memory<byte> target, IdleDeadline idle, ContainerStreamCheck? check)
    {
        for (int done = 0; done < target.Length;)
        {
            int read = await body.ReadAsync(target[done..], idle.Token);
            if (read == 0)
            {
                throw new IOException($"The answer ended after {done} of its {target.Length} bytes.");
            }

            check?.Append(target.Span.Slice(done, read));
            done += read;
            idle.Progress();
        }
    }

    /// <summary>
    /// Runs one read attempt under <paramref name="deadline"/> and an idle clock of <see cref="HttpKvStoreOptions.IdleTimeout"/>
    /// that the attempt restarts whenever bytes arrive; an attempt the idle clock ends fails as a stall, not retried.
    /// </summary>
    private async Task<T> WithIdleTimeoutAsync<T>(string operation, Func<IdleDeadline, Task<T>> attempt, CancellationToken deadline)
    {
        using var idle = new IdleDeadline(_options.IdleTimeout, deadline);
        try
        {
            return await attempt(idle);
        }
        catch (OperationCanceledException ex) when (idle.Stalled && !deadline.IsCancellationRequested)
        {
            throw new KvStoreException($"{Description}: {operation}: stalled, no bytes for {_options.IdleTimeout.TotalSeconds:0.###} s.", ex);
        }
    }

    private async Task<StoreRead> HeadAttemptAsync(ObjectKey key, IdleDeadline idle)
    {
        string name = key.Value;
        CancellationToken deadline = idle.Token;
        using var request = NewRequest(HttpMethod.Head, StoreProtocol.ObjectPath(key));
        using HttpResponseMessage response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, deadline);
        if (response.StatusCode == HttpStatusCode.NotFound)
        {
            return StoreRead.Miss;
        }

        if (response.StatusCode != HttpStatusCode.OK || response.Content.Headers.ContentLength is not long length)
        {
            throw await FailureAsync(response, $"HEAD {name}", deadline);
        }

        return new StoreRead(Found: true, ObjectLength: length, BytesWritten: 0);
    }

    private async Task<LookupResponse> LookupAsync(IReadOnlyList<ObjectKey> keys, int start, int count, CancellationToken cancellationToken)
    {
        string[] names = new string[count];
        for (int i = 0; i < count; i++)
        {
            names[i] = CheckKey(keys[start + i]);
        }

        if (count == 0)
        {
            return new LookupResponse(0, []);
        }

        var body = new LookupRequest(names);
        return await RunAsync("lookup", retry: true, async deadline =>
        {
            using var request = NewRequest(HttpMethod.Post, StoreProtocol.LookupPath);
            request.Content = JsonContent.Create(body, StoreProtocolJson.Default.LookupRequest);
            using HttpResponseMessage response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, deadline);
            if (response.StatusCode != HttpStatusCode.OK)
            {
                throw await FailureAsync(response, "lookup", deadline);
            }

            LookupResponse answer = await ReadJsonAsync(response, StoreProtocolJson.Default.LookupResponse, "lookup", deadline);
            if (answer.Exists is null || answer.Exists.Length != count || answer.Prefix < 0 || answer.Prefix > count
                || answer.Exists.AsSpan(0, answer.Prefix).Contains(false) || (answer.Prefix < count && answer.Exists[answer.Prefix]))
            {
                throw new KvStoreException($"{Description}: lookup: the answer does not fit the {count} keys asked.");
            }

            return answer;
        }, cancellationToken);
    }

    /// <summary>
    /// Runs <paramref name="attempt"/> under a deadline of <see cref="HttpKvStoreOptions.RequestTimeout"/>; a network
    /// failure, timeout or 5xx is retried with exponential backoff when <paramref name="retry"/>, and surfaces as
    /// <see cref="KvStoreException"/> when attempts run out. The caller's cancellation ends it at once.
    /// </summary>
    private async Task<T> RunAsync<T>(string operation, bool retry, Func<CancellationToken, Task<T>> attempt, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        int attempts = retry ? _options.MaxRetries + 1 : 1;
        for (int tried = 1; ; tried++)
        {
            KvStoreException failure;
            using (var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
            {
                deadline.CancelAfter(_options.RequestTimeout);
                try
                {
                    return await attempt(deadline.Token);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    throw;
                }
                catch (OperationCanceledException ex) when (deadline.IsCancellationRequested)
                {
                    failure = new TransientStoreException($"{Description}: {operation}: no answer within {_options.RequestTimeout.TotalSeconds:0.###} s.", ex);
                }
                catch (HttpRequestException ex)
                {
                    failure = new TransientStoreException($"{Description}: {operation}: {ex.Message}", ex);
                }
                catch (IOException ex)
                {
                    failure = new TransientStoreException($"{Description}: {operation}: the connection failed mid-answer: {ex.Message}", ex);
                }
                catch (TransientStoreException ex)
                {
                    failure = ex;
                }
            }

            if (tried >= attempts)
            {
                // Callers see the public type; the cause (socket error, timeout) stays attached.
                string message = attempts == 1 ? failure.Message : $"{failure.Message} (after {attempts} attempts)";
                throw failure.InnerException is { } cause ? new KvStoreException(message, cause) : new KvStoreException(message);
            }

            double jitter = 0.75 + (Random.Shared.NextDouble() * 0.5);
            TimeSpan backoff = TimeSpan.FromTicks((long)(Math.Min(s_firstBackoff.Ticks << (tried - 1), s_maxBackoff.Ticks) * jitter));
            StoreLog.Retry(_logger, operation, tried, attempts, Description, backoff.TotalMilliseconds, failure.Message);
            await Task.Delay(backoff, cancellationToken);
        }
    }

    /// <summary>The exception for an unexpected answer: 5xx (retryable), 507/413 (full), 401/403 (token), others.</summary>
    private async Task<KvStoreException> FailureAsync(HttpResponseMessage response, string operation, CancellationToken deadline)
    {
        string detail = "";
        if (response.Content.Headers.ContentLength is <= StoreProtocol.MaxErrorTextBytes and > 0)
        {
            detail = ": " + (await response.Content.ReadAsStringAsync(deadline)).Trim();
        }

        int code = (int)response.StatusCode;
        string message = $"{Description}: {operation}: HTTP {code} {response.ReasonPhrase}{detail}";
        HttpStatusCode status = response.StatusCode;
        return StoreProtocol.MeansFull(status) ? new KvStoreFullException(message)
            : StoreProtocol.MeansBadToken(status) ? new KvStoreException(_client.DefaultRequestHeaders.Authorization is null
                ? $"{message} (the store wants a token: set ${KvStores.TokenVariable} to the token it was started with)"
                : $"{message} (check the store token)")
            : StoreProtocol.MeansRetry(status) ? new TransientStoreException(message)
            : new KvStoreException(message);
    }

    private async Task<T> ReadJsonAsync<T>(HttpResponseMessage response, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type, string operation, CancellationToken deadline)
    {
        try
        {
            return await response.Content.ReadFromJsonAsync(type, deadline)
                ?? throw new KvStoreException($"{Description}: {operation}: the answer is empty.");
        }
        catch (JsonException ex)
        {
            throw new KvStoreException($"{Description}: {operation}: the answer is not valid JSON: {ex.Message}", ex);
        }
    }

    private HttpRequestMessage NewRequest(HttpMethod method, string path) =>
        new(method, new Uri(_base, path)) { Version = _version, VersionPolicy = _versionPolicy };

    private static string CheckKey(ObjectKey key) =>
        key.Value ?? throw new ArgumentException("The default ObjectKey names no object.", nameof(key));

    private bool ValidateServerCertificate(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors)
    {
        if (errors == SslPolicyErrors.None)
        {
            return true;
        }

        // Only an untrusted chain may be rescued by the configured certificate; a name mismatch never is.
        if (_trusted is null || certificate is null || errors != SslPolicyErrors.RemoteCertificateChainErrors)
        {
            return false;
        }

        using var custom = new X509Chain();
        custom.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        custom.ChainPolicy.CustomTrustStore.AddRange(_trusted);
        custom.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        using X509Certificate2 presented = X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        return custom.Build(presented);
    }

    /// <summary>A deadline that moves forward whenever bytes arrive: it ends an attempt that makes no progress for the idle timeout.</summary>
    private sealed class IdleDeadline : IDisposable
    {
        private readonly CancellationTokenSource _source;
        private readonly TimeSpan _timeout;
        private readonly CancellationToken _outer;

        public IdleDeadline(TimeSpan timeout, CancellationToken outer)
        {
            _outer = outer;
            _timeout = timeout;
            _source = CancellationTokenSource.CreateLinkedTokenSource(outer);
            _source.CancelAfter(timeout);
        }

        public CancellationToken Token => _source.Token;

        /// <summary>Whether the idle clock (not the outer deadline) ended the attempt.</summary>
        public bool Stalled => _source.IsCancellationRequested && !_outer.IsCancellationRequested;

        public void Progress() => _source.CancelAfter(_timeout);

        public void Dispose() => _source.Dispose();
    }

    /// <summary>A failure worth another attempt (network, timeout, 5xx).</summary>
    private sealed class TransientStoreException : KvStoreException
    {
        public TransientStoreException(string message)
            : base(message)
        {
        }

        public TransientStoreException(string message, Exception innerException)
            : base(message, innerException)
        {
        }
    }
}
