using System.Text.Json.Serialization;
using KvFetcher.Store;

namespace KvFetcher.Server;

/// <summary>The body of <c>POST /v1/lookup</c>.</summary>
internal sealed record LookupRequest(string[]? Keys);

/// <summary>The answer to a lookup: the longest stored prefix of the keys and whether each is stored.</summary>
internal sealed record LookupResponse(int Prefix, bool[] Exists);

/// <summary>Source-generated JSON for the wire types (NativeAOT needs no reflection).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(LookupRequest))]
[JsonSerializable(typeof(LookupResponse))]
[JsonSerializable(typeof(StoreStats))]
internal sealed partial class ServerJson : JsonSerializerContext;
