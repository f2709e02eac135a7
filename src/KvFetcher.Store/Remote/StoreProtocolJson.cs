using System.Text.Json.Serialization;

namespace KvFetcher.Store.Remote;

/// <summary>The body of <c>POST /v1/lookup</c>: the object keys to look up, in chain order.</summary>
public sealed record LookupRequest(string[]? Keys);

/// <summary>The answer to a lookup: the longest stored prefix of the keys and whether each is stored.</summary>
public sealed record LookupResponse(int Prefix, bool[] Exists);

/// <summary>
/// Source-generated JSON for the store protocol's bodies (<see cref="LookupRequest"/>, <see cref="LookupResponse"/>,
/// <see cref="StoreStats"/>), camelCase, for the client and the server alike (NativeAOT needs no reflection).
/// </summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(LookupRequest))]
[JsonSerializable(typeof(LookupResponse))]
[JsonSerializable(typeof(StoreStats))]
public sealed partial class StoreProtocolJson : JsonSerializerContext;
