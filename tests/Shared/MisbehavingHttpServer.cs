using System.Buffers;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using KvFetcher.Store;
using KvFetcher.Store.Remote;

namespace KvFetcher.Tests;

/// <summary>How a <see cref="MisbehavingHttpServer"/> goes wrong.</summary>
internal enum Misbehaviour
{
    /// <summary>Accepts connections and reads requests, never answers.</summary>
    Silent,

    /// <summary>
    /// Answers lookups and puts from a backing store, and every GET with its headers and part of its body, then nothing
    /// more on that connection (a store that stalls mid-body).
    /// </summary>
    StallMidBody,
}

/// <summary>
/// A store server gone wrong on an ephemeral loopback port, speaking just enough HTTP/1.1 for the real
/// <c>HttpKvStore</c> client: a legitimate test fixture for what a slow or silent store costs.
/// </summary>
internal sealed class MisbehavingHttpServer : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Misbehaviour _mode;
    private readonly IKvStore? _backing;
    private readonly List<Task> _connections = [];
    private readonly Task _accepting;
    private int _accepted;
    private int _stalledGets;

    public MisbehavingHttpServer(Misbehaviour mode, IKvStore? backing = null)
    {
        _mode = mode;
        _backing = backing;
        _listener.Start();
        Address = new Uri($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}");
        _accepting = AcceptLoopAsync();
    }

    public Uri Address { get; }

    /// <summary>Connections accepted so far.</summary>
    public int Accepted => Volatile.Read(ref _accepted);

    /// <summary>GETs answered with part of a body and then left hanging.</summary>
    public int StalledGets => Volatile.Read(ref _stalledGets);

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        try
        {
            await _accepting;
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }

        Task[] connections;
        lock (_connections)
        {
            connections = [.. _connections];
        }

        await Task.WhenAll(connections);
        _stop.Dispose();
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket socket = await _listener.AcceptSocketAsync(_stop.Token);
            Interlocked.Increment(ref _accepted);
            lock (_connections)
            {
                _connections.Add(ServeAsync(socket));
            }
        }
    }

    private async Task ServeAsync(Socket socket)
    {
        using (socket)
        await using (var stream = new NetworkStream(socket, ownsSocket: false))
        {
            try
            {
                while (await ReadRequestAsync(stream, _stop.Token) is { } request)
                {
                    if (_mode == Misbehaviour.Silent || !await AnswerAsync(stream, request, _stop.Token))
                    {
                        await Task.Delay(Timeout.Infinite, _stop.Token);
                    }
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or IOException or SocketException or ObjectDisposedException)
            {
                // The client gave up on us, or the fixture is over.
            }
        }
    }

    /// <summary>Answers one request; false when it left the answer hanging.</summary>
    private async Task<bool> AnswerAsync(NetworkStream stream, Request request, CancellationToken stop)
    {
        const string Objects = StoreProtocol.ObjectsPath;
        if (request.Method == "POST" && request.Path == StoreProtocol.LookupRoute)
        {
            LookupRequest? lookup = JsonSerializer.Deserialize(request.Body, StoreProtocolJson.Default.LookupRequest);
            ObjectKey[] keys = [.. (lookup?.Keys ?? []).Select(ObjectKey.Parse)];
            bool[] exists = _backing is null ? new bool[keys.Length] : await _backing.ExistsAsync(keys, stop);
            int prefix = Array.IndexOf(exists, false);
            byte[] answer = JsonSerializer.SerializeToUtf8Bytes(new LookupResponse(prefix < 0 ? exists.Length : prefix, exists), StoreProtocolJson.Default.LookupResponse);
            await WriteAsync(stream, "200 OK", StoreProtocol.JsonMediaType, answer, stop);
            return true;
        }

        if (request.Method == "PUT" && request.Path.StartsWith(Objects, StringComparison.Ordinal))
        {
            if (_backing is not null)
            {
                await _backing.PutAsync(ObjectKey.Parse(request.Path[Objects.Length..]), request.Body, stop);
            }

            await WriteAsync(stream, "204 No Content", null, [], stop);
            return true;
        }

        if (request.Method == "GET" && request.Path.StartsWith(Objects, StringComparison.Ordinal))
        {
            var body = new ArrayBufferWriter<byte>();
            if (_backing is null || !(await _backing.GetAsync(ObjectKey.Parse(request.Path[Objects.Length..]), body, cancellationToken: stop)).Found)
            {
                await WriteAsync(stream, "404 Not Found", null, [], stop);
                return true;
            }

            // The headers promise the whole object; a third of it comes, then nothing.
            string head = $"HTTP/1.1 200 OK\r\nContent-Type: {StoreProtocol.ObjectMediaType}\r\nContent-Length: {body.WrittenCount}\r\n\r\n";
            await stream.WriteAsync(Encoding.ASCII.GetBytes(head), stop);
            await stream.WriteAsync(body.WrittenMemory[..(body.WrittenCount / 3)], stop);
            await stream.FlushAsync(stop);
            Interlocked.Increment(ref _stalledGets);
            return false;
        }

        await WriteAsync(stream, "404 Not Found", null, [], stop);
        return true;
    }

    private static async Task WriteAsync(NetworkStream stream, string status, string? contentType, byte[] body, CancellationToken stop)
    {
        string type = contentType is null ? "" : $"Content-Type: {contentType}\r\n";
        string head = $"HTTP/1.1 {status}\r\n{type}Content-Length: {body.Length}\r\n\r\n";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(head), stop);
        await stream.WriteAsync(body, stop);
        await stream.FlushAsync(stop);
    }

    /// <summary>Reads one request (line, headers, Content-Length body); null when the client closed the connection.</summary>
    private static async Task<Request?> ReadRequestAsync(NetworkStream stream, CancellationToken stop)
    {
        var head = new List<byte>();
        var one = new byte[1];
        while (head.Count < 4 || head[^4] != '\r' || head[^3] != '\n' || head[^2] != '\r' || head[^1] != '\n')
        {
            if (await stream.ReadAsync(one, stop) == 0)
            {
                return null;
            }

            head.Add(one[0]);
        }

        string[] lines = Encoding.ASCII.GetString([.. head]).Split("\r\n");
        string[] requestLine = lines[0].Split(' ');
        int length = 0;
        bool chunked = false;
        foreach (string line in lines[1..])
        {
            if (line.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase))
            {
                length = int.Parse(line["Content-Length:".Length..].Trim(), CultureInfo.InvariantCulture);
            }
            else if (line.StartsWith("Transfer-Encoding:", StringComparison.OrdinalIgnoreCase) && line.Contains("chunked", StringComparison.OrdinalIgnoreCase))
            {
                chunked = true;
            }
        }

        if (!chunked)
        {
            byte[] body = new byte[length];
            await stream.ReadExactlyAsync(body, stop);
            return new Request(requestLine[0], requestLine[1], body);
        }

        // Chunked: hex size line, data, CRLF, until a zero-size chunk and its trailing CRLF.
        var chunks = new List<byte>();
        while (true)
        {
            int size = int.Parse(await ReadLineAsync(stream, stop), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            byte[] data = new byte[size + 2];
            await stream.ReadExactlyAsync(size == 0 ? data.AsMemory(0, 0) : data, stop);
            if (size == 0)
            {
                await ReadLineAsync(stream, stop);
                return new Request(requestLine[0], requestLine[1], [.. chunks]);
            }

            chunks.AddRange(data.AsSpan(0, size));
        }
    }

    private static async Task<string> ReadLineAsync(NetworkStream stream, CancellationToken stop)
    {
        var line = new List<byte>();
        var one = new byte[1];
        while (line.Count < 2 || line[^2] != '\r' || line[^1] != '\n')
        {
            if (await stream.ReadAsync(one, stop) == 0)
            {
                throw new IOException("The client closed the connection mid-request.");
            }

            line.Add(one[0]);
        }

        return Encoding.ASCII.GetString([.. line], 0, line.Count - 2);
    }

    private sealed record Request(string Method, string Path, byte[] Body);
}
