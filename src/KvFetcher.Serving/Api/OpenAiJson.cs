using System.Text.Json;
using System.Text.Json.Serialization;

namespace KvFetcher.Serving.Api;

/// <summary>The body of <c>POST /v1/completions</c> (the fields served; unknown fields are ignored).</summary>
internal sealed class CompletionRequest
{
    public string? Model { get; set; }

    /// <summary>A string, an array of one string, or an array of token ids.</summary>
    public JsonElement Prompt { get; set; }

    public int? MaxTokens { get; set; }

    public float? Temperature { get; set; }

    public float? TopP { get; set; }

    /// <summary>A string or an array of up to four strings.</summary>
    public JsonElement Stop { get; set; }

    public long? Seed { get; set; }

    public bool? Stream { get; set; }

    public StreamOptions? StreamOptions { get; set; }

    public int? N { get; set; }

    public int? BestOf { get; set; }

    public bool? Echo { get; set; }

    public JsonElement Logprobs { get; set; }

    public float? PresencePenalty { get; set; }

    public float? FrequencyPenalty { get; set; }

    /// <summary>Text after the completion (insertion): refused.</summary>
    public JsonElement Suffix { get; set; }

    /// <summary>vLLM's top-k extension: refused (<see cref="UnsupportedOptions"/>).</summary>
    public int? TopK { get; set; }
}

/// <summary>The body of <c>POST /v1/chat/completions</c>.</summary>
internal sealed class ChatCompletionRequest
{
    public string? Model { get; set; }

    public List<ChatMessageIn?>? Messages { get; set; }

    public int? MaxTokens { get; set; }

    /// <summary>The newer name of <see cref="MaxTokens"/> (what current OpenAI clients send); wins when both are set.</summary>
    public int? MaxCompletionTokens { get; set; }

    public float? Temperature { get; set; }

    public float? TopP { get; set; }

    public JsonElement Stop { get; set; }

    public long? Seed { get; set; }

    public bool? Stream { get; set; }

    public StreamOptions? StreamOptions { get; set; }

    public int? N { get; set; }

    public JsonElement Logprobs { get; set; }

    /// <summary>Needs <see cref="Logprobs"/>, which are not served: refused whenever set.</summary>
    public JsonElement TopLogprobs { get; set; }

    public JsonElement Tools { get; set; }

    /// <summary><c>{"type": "text"}</c> is served; <c>json_object</c> and <c>json_schema</c> are refused.</summary>
    public JsonElement ResponseFormat { get; set; }

    public float? PresencePenalty { get; set; }

    public float? FrequencyPenalty { get; set; }

    /// <summary>vLLM's top-k extension: refused (<see cref="UnsupportedOptions"/>).</summary>
    public int? TopK { get; set; }
}

internal sealed class ChatMessageIn
{
    public string? Role { get; set; }

    /// <summary>A string, or an array of content parts of which the <c>text</c> parts are served.</summary>
    public JsonElement Content { get; set; }
}

internal sealed class StreamOptions
{
    public bool? IncludeUsage { get; set; }
}

internal sealed record CompletionResponse(string Id, string Object, long Created, string Model, CompletionChoice[] Choices, Usage? Usage);

internal sealed record CompletionChoice(string Text, int Index, JsonElement? Logprobs, string? FinishReason);

internal sealed record ChatCompletionResponse(string Id, string Object, long Created, string Model, string? SystemFingerprint, ChatChoice[] Choices, Usage? Usage);

internal sealed record ChatChoice(int Index, ChatMessageOut Message, JsonElement? Logprobs, string? FinishReason);

internal sealed record ChatMessageOut(string Role, string? Content, string? Refusal);

internal sealed record ChatChunk(string Id, string Object, long Created, string Model, string? SystemFingerprint, ChatChunkChoice[] Choices, Usage? Usage);

internal sealed record ChatChunkChoice(int Index, ChatDelta Delta, JsonElement? Logprobs, string? FinishReason);

internal sealed record ChatDelta(string? Role, string? Content);

/// <summary>
/// Token counts as OpenAI reports them; <c>prompt_tokens_details.cached_tokens</c> is the prompt tokens reused from the
/// store, and <c>kvfetcher</c> carries the details (an extension field other clients ignore).
/// </summary>
internal sealed record Usage(int PromptTokens, int CompletionTokens, int TotalTokens, PromptTokensDetails PromptTokensDetails, KvFetcherUsage Kvfetcher);

internal sealed record PromptTokensDetails(int CachedTokens);

/// <summary>
/// The reuse details of one request: tokens and times, and how the stored prefix was split (<c>strategy</c>;
/// <c>stored_chunks</c> found, of which the engine computed <c>computed_chunks</c> and the fetcher restored
/// <c>fetched_chunks</c>; <c>meeting_chunk</c>, the first chunk the fetcher restored; chunks per <c>variants</c>; <c>plan</c>, the plan a
/// strategy that chooses one took: ours-layer's <c>ours</c> or <c>layer-split</c>).
/// </summary>
internal sealed record KvFetcherUsage(
    int ReusedTokens,
    int ComputedTokens,
    double TtftMs,
    double QueueMs,
    double FetchMs,
    double PrefillMs,
    long BytesFetched,
    int FallbackChunks,
    bool LookupFailed,
    string Tenant,
    string? Strategy = null,
    int StoredChunks = 0,
    int ComputedChunks = 0,
    int FetchedChunks = 0,
    int? MeetingChunk = null,
    IReadOnlyDictionary<string, int>? Variants = null,
    string? Plan = null);

internal sealed record ModelList(string Object, ModelInfo[] Data);

internal sealed record ModelInfo(string Id, string Object, long Created, string OwnedBy);

internal sealed record ErrorResponse(ErrorBody Error);

internal sealed record ErrorBody(string Message, string Type, string? Param, string? Code);

internal sealed record HealthResponse(string Status, string Model, bool Reuse, int ActiveSessions, int QueuedRequests);

/// <summary>Source-generated JSON in OpenAI's snake_case (NativeAOT needs no reflection).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, NumberHandling = JsonNumberHandling.Strict)]
[JsonSerializable(typeof(CompletionRequest))]
[JsonSerializable(typeof(ChatCompletionRequest))]
[JsonSerializable(typeof(CompletionResponse))]
[JsonSerializable(typeof(ChatCompletionResponse))]
[JsonSerializable(typeof(ChatChunk))]
[JsonSerializable(typeof(ModelList))]
[JsonSerializable(typeof(ModelInfo))]
[JsonSerializable(typeof(ErrorResponse))]
[JsonSerializable(typeof(HealthResponse))]
internal sealed partial class OpenAiJson : JsonSerializerContext;
