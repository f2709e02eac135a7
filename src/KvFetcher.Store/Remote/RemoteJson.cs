using System.Text.Json.Serialization;

namespace KvFetcher.Store.Remote;

/// <summary>The body of <c>POST /v1/lookup</c>.</summary>
internal sealed record LookupRequest(string[] Keys);

/// <summary>The server's answer to a lookup: the longest stored prefix of the keys and whether each is stored.</summary>
internal sealed record LookupAnswer(int Prefix, bool[] Exists);

/// <summary>Source-generated JSON for the server's wire types (NativeAOT needs no reflection).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(LookupRequest))]
[JsonSerializable(typeof(LookupAnswer))]
[JsonSerializable(typeof(StoreStats))]
internal sealed partial class RemoteJson : JsonSerializerContext;
