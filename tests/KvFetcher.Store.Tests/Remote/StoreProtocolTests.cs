using System.Net;
using System.Text.Json;
using KvFetcher.Store.Remote;

namespace KvFetcher.Store.Tests.Remote;

/// <summary>The store protocol's one definition: what the client writes, the server reads, and the other way round.</summary>
public class StoreProtocolTests
{
    [Theory]
    [InlineData(0, 10L)]
    [InlineData(128, 1L)]
    [InlineData(5000, null)]
    public void RangeHeader_AsTheClientSendsIt_ServerParsesTheSameRange(long offset, long? length)
    {
        var range = new ByteRange(offset, length);

        string header = StoreProtocol.RangeHeader(range).ToString();

        Assert.True(StoreProtocol.TryParseRange(header, out ByteRange parsed), header);
        Assert.Equal(range, parsed);
    }

    [Theory]
    [InlineData("bytes=-5")]
    [InlineData("bytes=0-1,5-6")]
    [InlineData("bytes=9-3")]
    [InlineData("items=0-5")]
    [InlineData("bytes")]
    [InlineData("")]
    [InlineData(null)]
    public void TryParseRange_FormsNotServed_False(string? header) =>
        Assert.False(StoreProtocol.TryParseRange(header, out _));

    [Fact]
    public void ContentRange_ServedRange_ParsesAsTheClientChecksIt()
    {
        var served = System.Net.Http.Headers.ContentRangeHeaderValue.Parse(StoreProtocol.ContentRange(100, 500, 10_000));
        Assert.Equal((100L, 599L, 10_000L), (served.From, served.To, served.Length));
        Assert.Equal("bytes */42", StoreProtocol.UnsatisfiedContentRange(42));
    }

    [Fact]
    public void StatusOf_StoreFailures_ClientReadsTheSameMeaning()
    {
        var full = (HttpStatusCode)StoreProtocol.StatusOf(new KvStoreFullException("full"));
        var failing = (HttpStatusCode)StoreProtocol.StatusOf(new KvStoreException("disk hiccup"));

        Assert.Equal(HttpStatusCode.InsufficientStorage, full);
        Assert.True(StoreProtocol.MeansFull(full));
        Assert.False(StoreProtocol.MeansRetry(full));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, failing);
        Assert.True(StoreProtocol.MeansRetry(failing));
        Assert.True(StoreProtocol.MeansFull(HttpStatusCode.RequestEntityTooLarge));
        Assert.True(StoreProtocol.MeansBadToken(HttpStatusCode.Unauthorized));
        Assert.False(StoreProtocol.MeansRetry(HttpStatusCode.NotFound));
    }

    [Fact]
    public void Json_LookupBodies_CamelCaseOnTheWire()
    {
        Assert.Equal("{\"keys\":[\"a\",\"b\"]}", JsonSerializer.Serialize(new LookupRequest(["a", "b"]), StoreProtocolJson.Default.LookupRequest));
        Assert.Equal("{\"prefix\":1,\"exists\":[true,false]}", JsonSerializer.Serialize(new LookupResponse(1, [true, false]), StoreProtocolJson.Default.LookupResponse));
        LookupResponse? back = JsonSerializer.Deserialize("{\"prefix\":2,\"exists\":[true,true]}", StoreProtocolJson.Default.LookupResponse);
        Assert.Equal(2, back?.Prefix);
    }

    [Fact]
    public void Paths_ObjectAndRoutes_AgreeOnOnePlace()
    {
        ObjectKey key = TestObjects.KeyFor("x");

        Assert.Equal("/" + StoreProtocol.ObjectPath(key), StoreProtocol.ObjectRoute.Replace("{" + StoreProtocol.KeyRouteValue + "}", key.Value, StringComparison.Ordinal));
        Assert.Equal(StoreProtocol.LookupRoute, "/" + StoreProtocol.LookupPath);
        Assert.Equal(StoreProtocol.StatsRoute, "/" + StoreProtocol.StatsPath);
        Assert.True(StoreProtocol.MaxLookupBodyBytes > StoreProtocol.MaxLookupKeys * (long)ObjectKey.MaxLength);
    }
}
