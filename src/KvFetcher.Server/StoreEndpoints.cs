using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using System.Text.Json;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Hosting;
using KvFetcher.Store;
using KvFetcher.Store.Disk;
using KvFetcher.Store.Remote;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;

namespace KvFetcher.Server;

/// <summary>
/// The HTTP API over one <see cref="IKvStore"/>: <c>/v1/objects/{key}</c> (GET with optional single Range, HEAD, PUT,
/// DELETE), <c>POST /v1/lookup</c>, <c>GET /v1/stats</c>, <c>/healthz</c> and <c>/metrics</c>, all behind the bearer token
/// but <c>/healthz</c> (and <c>/metrics</c> with <see cref="StoreServerOptions.PublicMetrics"/>). Every handler answers a
/// bad request with a status and one line of text and leaves the server serving.
/// </summary>
internal sealed class StoreEndpoints(IKvStore store, StoreServerOptions options, ServerMetrics metrics)
{
    /// <summary>Bytes read from disk and flushed to the socket at a time by a streamed GET.</summary>
    private const int SliceBytes = 256 << 10;

    public void Map(IEndpointRouteBuilder app)
    {
        app.MapGet(StoreProtocol.ObjectRoute, new RequestDelegate(GetAsync)).WithDisplayName("get");
        app.MapMethods(StoreProtocol.ObjectRoute, [HttpMethods.Head], new RequestDelegate(HeadAsync)).WithDisplayName("head");
        app.MapPut(StoreProtocol.ObjectRoute, new RequestDelegate(PutAsync)).WithDisplayName("put");
        app.MapDelete(StoreProtocol.ObjectRoute, new RequestDelegate(DeleteAsync)).WithDisplayName("delete");
        app.MapPost(StoreProtocol.LookupRoute, new RequestDelegate(LookupAsync)).WithDisplayName("lookup");
        app.MapGet(StoreProtocol.StatsRoute, new RequestDelegate(StatsAsync)).WithDisplayName("stats");
        // The public list: everything else needs the token (see BearerAuthentication).
        app.MapHealthAndMetrics(HealthAsync, options.PublicMetrics, metrics.RefreshAsync);
    }

    /// <summary>Answers with <paramref name="status"/> and one line, or aborts when the response has already begun.</summary>
    public static Task FailAsync(HttpContext context, int status, string message)
    {
        HttpResponse response = context.Response;
        if (response.HasStarted || (response.BodyWriter.CanGetUnflushedBytes && response.BodyWriter.UnflushedBytes > 0))
        {
            // Part of an answer is already out (or buffered): a clean error is impossible, and a torn body must not
            // look complete, so the connection goes.
            context.Abort();
            return Task.CompletedTask;
        }

        byte[] text = Encoding.UTF8.GetBytes(message + "\n");
        response.StatusCode = status;
        response.ContentType = StoreProtocol.ErrorMediaType;
        response.ContentLength = text.Length;
        return response.Body.WriteAsync(text, context.RequestAborted).AsTask();
    }

    private async Task GetAsync(HttpContext context)
    {
        if (!TryGetKey(context, out ObjectKey key))
        {
            await FailAsync(context, StatusCodes.Status400BadRequest, "invalid object key");
            return;
        }

        string? rangeHeader = context.Request.Headers.Range;
        bool ranged = !string.IsNullOrEmpty(rangeHeader);
        ByteRange range = ByteRange.All;
        if (ranged && !StoreProtocol.TryParseRange(rangeHeader, out range))
        {
            await FailAsync(context, StatusCodes.Status400BadRequest, "unsupported Range: one 'bytes=first-last' or 'bytes=first-' range is served");
            return;
        }

        if (!ranged && store is DiskKvStore disk)
        {
            await StreamAsync(context, disk, key);
            return;
        }

        HttpResponse response = context.Response;
        PipeWriter body = response.BodyWriter;
        StoreRead read;
        try
        {
            // The store verifies the object and writes it straight into the response; Kestrel holds it until the
            // handler returns, so the status and Content-Length set below still go out first.
            read = await store.GetAsync(key, body, range, context.RequestAborted);
        }
        catch (ArgumentException) when (ranged)
        {
            await FailAsync(context, StatusCodes.Status416RangeNotSatisfiable, "range outside the object");
            return;
        }

        if (!read.Found)
        {
            await FailAsync(context, StatusCodes.Status404NotFound, "not found");
            return;
        }

        response.ContentType = StoreProtocol.ObjectMediaType;
        response.Headers.AcceptRanges = StoreProtocol.RangeUnit;
        response.ContentLength = read.BytesWritten;
        if (ranged)
        {
            if (read.BytesWritten == 0)
            {
                response.StatusCode = StatusCodes.Status416RangeNotSatisfiable;
                response.Headers.ContentRange = StoreProtocol.UnsatisfiedContentRange(read.ObjectLength);
                return;
            }

            response.StatusCode = StatusCodes.Status206PartialContent;
            response.Headers.ContentRange = StoreProtocol.ContentRange(range.Offset, read.BytesWritten, read.ObjectLength);
        }

        metrics.AddSent(read.BytesWritten);
    }

    /// <summary>
    /// A whole object from the disk store: Content-Length from the store's index, then the file in slices, each flushed
    /// to the socket as soon as it is read, so no copy of the whole object is held and reading overlaps sending. The
    /// header is checked before anything goes out, and so is the checksum of an object that fits one slice: a corrupt
    /// one is a clean 404. A larger object's checksum is known only after its last byte has been read, and its last slice
    /// is held back until then: a mismatch aborts the connection, so the client sees a torn body, never a complete wrong
    /// one (and verifies every container itself), and the store has discarded the object, so the client's retry is a 404.
    /// </summary>
    private async Task StreamAsync(HttpContext context, DiskKvStore disk, ObjectKey key)
    {
        using DiskKvStore.ObjectReader? reader = disk.OpenRead(key);
        if (reader is null)
        {
            await FailAsync(context, StatusCodes.Status404NotFound, "not found");
            return;
        }

        HttpResponse response = context.Response;
        PipeWriter body = response.BodyWriter;
        int firstLength = (int)Math.Min(reader.Length, SliceBytes);
        byte[] first = ArrayPool<byte>.Shared.Rent(firstLength);
        try
        {
            // The first slice before the status line: its header check (and, for an object that fits it, the checksum)
            // decides between 200 and 404.
            int read;
            try
            {
                read = reader.Read(first.AsSpan(0, firstLength));
            }
            catch (InvalidKvDataException)
            {
                await FailAsync(context, StatusCodes.Status404NotFound, "not found");
                return;
            }

            if (reader.AtEnd && !reader.Finish())
            {
                await FailAsync(context, StatusCodes.Status404NotFound, "not found");
                return;
            }

            response.ContentType = StoreProtocol.ObjectMediaType;
            response.Headers.AcceptRanges = StoreProtocol.RangeUnit;
            response.ContentLength = reader.Length;
            FlushResult flushed = await body.WriteAsync(first.AsMemory(0, read), context.RequestAborted);
            while (!reader.AtEnd)
            {
                if (flushed.IsCanceled || flushed.IsCompleted)
                {
                    return; // the client went away
                }

                body.Advance(reader.Read(body.GetMemory(SliceBytes).Span[..SliceBytes]));
                if (!reader.AtEnd)
                {
                    // The last slice is held until the checksum holds: flushed, it would complete the body.
                    flushed = await body.FlushAsync(context.RequestAborted);
                }
            }
        }
        catch (InvalidKvDataException)
        {
            context.Abort(); // the file is shorter than its index says: the store has discarded it
            return;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(first);
        }

        if (!reader.Finish())
        {
            context.Abort(); // the last slice never leaves: the client's body stays short of Content-Length
            return;
        }

        await body.FlushAsync(context.RequestAborted);
        metrics.AddSent(reader.Length);
    }

    private async Task HeadAsync(HttpContext context)
    {
        if (!TryGetKey(context, out ObjectKey key))
        {
            context.Response.StatusCode = StatusCodes.Status400BadRequest;
            return;
        }

        // An empty range: the store verifies the object and reports its length without writing any of it.
        StoreRead read = await store.GetAsync(key, NothingWriter.Instance, new ByteRange(0, 0), context.RequestAborted);
        if (!read.Found)
        {
            context.Response.StatusCode = StatusCodes.Status404NotFound;
            return;
        }

        context.Response.ContentType = StoreProtocol.ObjectMediaType;
        context.Response.Headers.AcceptRanges = StoreProtocol.RangeUnit;
        context.Response.ContentLength = read.ObjectLength;
    }

    private async Task PutAsync(HttpContext context)
    {
        if (!TryGetKey(context, out ObjectKey key))
        {
            await FailAsync(context, StatusCodes.Status400BadRequest, "invalid object key");
            return;
        }

        if (context.Request.ContentLength is not long length)
        {
            await FailAsync(context, StatusCodes.Status411LengthRequired, "Content-Length is required");
            return;
        }

        if (length > options.MaxObjectBytes)
        {
            await FailAsync(context, StatusCodes.Status413PayloadTooLarge, $"object of {length} bytes exceeds the limit of {options.MaxObjectBytes}");
            return;
        }

        if (store is DiskKvStore disk)
        {
            await PutStreamAsync(context, disk, key, length);
            return;
        }

        int size = (int)length;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(Math.Max(size, 1));
        try
        {
            Memory<byte> data = buffer.AsMemory(0, size);
            int received = 0;
            Stream requestBody = context.Request.Body;
            while (received < size)
            {
                int n = await requestBody.ReadAsync(data[received..], context.RequestAborted);
                if (n == 0)
                {
                    await FailAsync(context, StatusCodes.Status400BadRequest, $"body ended after {received} of {size} bytes");
                    return;
                }

                received += n;
            }

            metrics.AddReceived(size);
            if (!ChunkContainer.IsIntact(data.Span))
            {
                await FailAsync(context, StatusCodes.Status400BadRequest, "the body is not an intact chunk container");
                return;
            }

            await store.PutAsync(key, data, context.RequestAborted);
            context.Response.StatusCode = StatusCodes.Status204NoContent;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// A put into the disk store as the body arrives: each piece goes from Kestrel's buffer straight to the object's temp
    /// file (no copy of the whole object), the header is checked as soon as its bytes are in and the checksum after the
    /// last; the object replaces any old one only once it holds. The disk's blocks are allocated before the body is read,
    /// so a full disk is refused (507) without consuming it.
    /// </summary>
    private async Task PutStreamAsync(HttpContext context, DiskKvStore disk, ObjectKey key, long length)
    {
        if (length < ChunkContainer.MinSize)
        {
            await FailAsync(context, StatusCodes.Status400BadRequest, $"a body of {length} bytes cannot be a chunk container");
            return;
        }

        using DiskKvStore.ObjectWriter writer = await disk.OpenWriteAsync(key, length, context.RequestAborted);
        PipeReader body = context.Request.BodyReader;
        try
        {
            while (true)
            {
                ReadResult result = await body.ReadAsync(context.RequestAborted);
                ReadOnlySequence<byte> received = result.Buffer;
                try
                {
                    foreach (ReadOnlyMemory<byte> piece in received)
                    {
                        writer.Write(piece.Span);
                    }
                }
                finally
                {
                    body.AdvanceTo(received.End);
                }

                if (result.IsCompleted || result.IsCanceled)
                {
                    break;
                }
            }

            if (writer.Written != length)
            {
                await FailAsync(context, StatusCodes.Status400BadRequest, $"body ended after {writer.Written} of {length} bytes");
                return;
            }

            writer.Commit();
        }
        catch (InvalidKvDataException)
        {
            await FailAsync(context, StatusCodes.Status400BadRequest, "the body is not an intact chunk container");
            return;
        }

        metrics.AddReceived(length);
        context.Response.StatusCode = StatusCodes.Status204NoContent;
    }

    private async Task DeleteAsync(HttpContext context)
    {
        if (!TryGetKey(context, out ObjectKey key))
        {
            await FailAsync(context, StatusCodes.Status400BadRequest, "invalid object key");
            return;
        }

        bool removed = await store.DeleteAsync(key, context.RequestAborted);
        context.Response.StatusCode = removed ? StatusCodes.Status204NoContent : StatusCodes.Status404NotFound;
    }

    private async Task LookupAsync(HttpContext context)
    {
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
        {
            limit.MaxRequestBodySize = StoreProtocol.MaxLookupBodyBytes;
        }

        LookupRequest? request;
        try
        {
            request = await JsonSerializer.DeserializeAsync(context.Request.Body, StoreProtocolJson.Default.LookupRequest, context.RequestAborted);
        }
        catch (JsonException ex)
        {
            await FailAsync(context, StatusCodes.Status400BadRequest, $"invalid lookup JSON: {ex.Message}");
            return;
        }

        if (request?.Keys is not { } names)
        {
            await FailAsync(context, StatusCodes.Status400BadRequest, "the lookup needs {\"keys\":[...]}");
            return;
        }

        if (names.Length > StoreProtocol.MaxLookupKeys)
        {
            await FailAsync(context, StatusCodes.Status400BadRequest, $"{names.Length} keys in one lookup; at most {StoreProtocol.MaxLookupKeys}");
            return;
        }

        var keys = new ObjectKey[names.Length];
        for (int i = 0; i < names.Length; i++)
        {
            if (!ObjectKey.TryParse(names[i], out keys[i]))
            {
                await FailAsync(context, StatusCodes.Status400BadRequest, $"invalid object key at index {i}");
                return;
            }
        }

        bool[] exists = keys.Length == 0 ? [] : await store.ExistsAsync(keys, context.RequestAborted);
        int prefix = Array.IndexOf(exists, false);
        var answer = new LookupResponse(prefix < 0 ? exists.Length : prefix, exists);
        context.Response.ContentType = StoreProtocol.JsonMediaType;
        await JsonSerializer.SerializeAsync(context.Response.Body, answer, StoreProtocolJson.Default.LookupResponse, context.RequestAborted);
    }

    private async Task StatsAsync(HttpContext context)
    {
        StoreStats stats = await store.GetStatsAsync(context.RequestAborted);
        context.Response.ContentType = StoreProtocol.JsonMediaType;
        await JsonSerializer.SerializeAsync(context.Response.Body, stats, StoreProtocolJson.Default.StoreStats, context.RequestAborted);
    }

    private static Task HealthAsync(HttpContext context)
    {
        context.Response.ContentType = StoreProtocol.ErrorMediaType;
        return context.Response.WriteAsync("ok\n", context.RequestAborted);
    }

    private static bool TryGetKey(HttpContext context, out ObjectKey key)
    {
        key = default;
        return context.Request.RouteValues.TryGetValue(StoreProtocol.KeyRouteValue, out object? value) && ObjectKey.TryParse(value as string, out key);
    }

    /// <summary>A destination for gets that must write nothing (an empty range).</summary>
    private sealed class NothingWriter : IBufferWriter<byte>
    {
        public static readonly NothingWriter Instance = new();

        public void Advance(int count)
        {
            if (count != 0)
            {
                throw new InvalidOperationException($"A get of an empty range wrote {count} bytes.");
            }
        }

        public Memory<byte> GetMemory(int sizeHint = 0) => new byte[Math.Max(sizeHint, 1)];

        public Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;
    }
}
