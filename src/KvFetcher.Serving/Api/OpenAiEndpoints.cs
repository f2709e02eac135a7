using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Unicode;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using KvFetcher.Hosting;
using KvFetcher.Serving.Chat;
using KvFetcher.Serving.Scheduling;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace KvFetcher.Serving.Api;

/// <summary>
/// The OpenAI-compatible HTTP API over one <see cref="KvFetcherEngine"/>: <c>POST /v1/completions</c>,
/// <c>POST /v1/chat/completions</c> (both streaming with server-sent events or not), <c>GET /v1/models</c>,
/// <c>/healthz</c> and <c>/metrics</c>. A bad request gets an OpenAI-style error (<c>{"error": {...}}</c>, 4xx) and the
/// server keeps serving; at capacity, 429. Every answer reports reuse in <c>X-KvFetcher-Reused-Tokens</c> and
/// <c>X-KvFetcher-TTFT-Ms</c> and, in <c>usage</c>, <c>prompt_tokens_details.cached_tokens</c> and <c>kvfetcher</c>.
/// </summary>
internal sealed class OpenAiEndpoints(KvFetcherEngine engine, LlmServerOptions options)
{
    public const string TenantHeader = "X-KvFetcher-Tenant";
    public const string ReusedTokensHeader = "X-KvFetcher-Reused-Tokens";
    public const string TtftHeader = "X-KvFetcher-TTFT-Ms";

    /// <summary>OpenAI's limit on stop sequences per request.</summary>
    private const int MaxStopSequences = 4;

    private static readonly long s_created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    private enum Route
    {
        Completions,
        Chat,
    }

    public void Map(IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/completions", new RequestDelegate(context => ServeAsync(context, Route.Completions))).WithDisplayName("completions");
        app.MapPost("/v1/chat/completions", new RequestDelegate(context => ServeAsync(context, Route.Chat))).WithDisplayName("chat");
        app.MapGet("/v1/models", new RequestDelegate(ModelsAsync)).WithDisplayName("models");
        app.MapGet("/v1/models/{id}", new RequestDelegate(ModelAsync)).WithDisplayName("model");
        // The public list: every other route needs an API key when keys are in use (LlmServer's BearerAuthentication).
        app.MapHealthAndMetrics(HealthAsync, options.PublicMetrics);
    }

    private async Task ServeAsync(HttpContext context, Route route)
    {
        Prepared? prepared;
        ApiError? error;
        try
        {
            (prepared, error) = route == Route.Chat ? await PrepareChatAsync(context) : await PrepareCompletionAsync(context);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client left while its body was read or its prompt tokenized: the work stops here.
            return;
        }

        if (error is not null)
        {
            await error.WriteAsync(context);
            return;
        }

        Generation generation;
        try
        {
            generation = engine.Submit(prepared!.Request, context.RequestAborted);
        }
        catch (EngineBusyException ex)
        {
            context.Response.Headers.RetryAfter = "1";
            // OpenAI's 429s carry type "requests" (a request-rate limit) and code "rate_limit_exceeded".
            await new ApiError(StatusCodes.Status429TooManyRequests, ex.Message, "requests", Code: "rate_limit_exceeded").WriteAsync(context);
            return;
        }
        catch (ObjectDisposedException)
        {
            await new ApiError(StatusCodes.Status503ServiceUnavailable, "The server is shutting down.", "server_error").WriteAsync(context);
            return;
        }

        string id = (route == Route.Chat ? "chatcmpl-" : "cmpl-") + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(12));
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        try
        {
            PrefillInfo first = await generation.FirstToken;
            context.Response.Headers[ReusedTokensHeader] = first.ReusedTokens.ToString(CultureInfo.InvariantCulture);
            context.Response.Headers[TtftHeader] = first.TimeToFirstToken.TotalMilliseconds.ToString("0.###", CultureInfo.InvariantCulture);
            if (prepared.Request.Stream)
            {
                await StreamAsync(context, route, id, created, prepared, generation);
                return;
            }

            GenerationResult result = await generation.Completion;
            Usage usage = UsageOf(result, prepared);
            string finish = FinishName(result.FinishReason);
            context.Response.ContentType = "application/json";
            if (route == Route.Chat)
            {
                var body = new ChatCompletionResponse(id, "chat.completion", created, engine.ModelId, null,
                    [new ChatChoice(0, new ChatMessageOut("assistant", result.Text, null), null, finish)], usage);
                await JsonSerializer.SerializeAsync(context.Response.Body, body, OpenAiJson.Default.ChatCompletionResponse, context.RequestAborted);
            }
            else
            {
                var body = new CompletionResponse(id, "text_completion", created, engine.ModelId, [new CompletionChoice(result.Text, 0, null, finish)], usage);
                await JsonSerializer.SerializeAsync(context.Response.Body, body, OpenAiJson.Default.CompletionResponse, context.RequestAborted);
            }
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away; the engine has dropped the request.
        }
        catch (ObjectDisposedException)
        {
            await new ApiError(StatusCodes.Status503ServiceUnavailable, "The server is shutting down.", "server_error").WriteAsync(context);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException and not OperationCanceledException)
        {
            // The engine failed this request (only this one): a 500 with the reason, and the server serves on.
            await new ApiError(StatusCodes.Status500InternalServerError, $"The engine failed the request: {ex.Message}", "server_error").WriteAsync(context);
        }
    }

    private async Task StreamAsync(HttpContext context, Route route, string id, long created, Prepared prepared, Generation generation)
    {
        HttpResponse response = context.Response;
        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        CancellationToken aborted = context.RequestAborted;
        if (route == Route.Chat)
        {
            await WriteEventAsync(response, Chunk(id, created, new ChatDelta("assistant", ""), null, null), OpenAiJson.Default.ChatChunk, aborted);
        }

        await foreach (string piece in generation.Text.ReadAllAsync(aborted))
        {
            if (route == Route.Chat)
            {
                await WriteEventAsync(response, Chunk(id, created, new ChatDelta(null, piece), null, null), OpenAiJson.Default.ChatChunk, aborted);
            }
            else
            {
                await WriteEventAsync(response, new CompletionResponse(id, "text_completion", created, engine.ModelId, [new CompletionChoice(piece, 0, null, null)], null),
                    OpenAiJson.Default.CompletionResponse, aborted);
            }
        }

        GenerationResult result = await generation.Completion;
        string finish = FinishName(result.FinishReason);
        Usage usage = UsageOf(result, prepared);
        if (route == Route.Chat)
        {
            await WriteEventAsync(response, Chunk(id, created, new ChatDelta(null, null), finish, null), OpenAiJson.Default.ChatChunk, aborted);
            if (prepared.IncludeUsage)
            {
                await WriteEventAsync(response, new ChatChunk(id, "chat.completion.chunk", created, engine.ModelId, null, [], usage), OpenAiJson.Default.ChatChunk, aborted);
            }
        }
        else
        {
            await WriteEventAsync(response, new CompletionResponse(id, "text_completion", created, engine.ModelId, [new CompletionChoice("", 0, null, finish)], null),
                OpenAiJson.Default.CompletionResponse, aborted);
            if (prepared.IncludeUsage)
            {
                await WriteEventAsync(response, new CompletionResponse(id, "text_completion", created, engine.ModelId, [], usage), OpenAiJson.Default.CompletionResponse, aborted);
            }
        }

        await response.Body.WriteAsync("data: [DONE]\n\n"u8.ToArray(), aborted);
        await response.Body.FlushAsync(aborted);
    }

    private ChatChunk Chunk(string id, long created, ChatDelta delta, string? finish, Usage? usage) =>
        new(id, "chat.completion.chunk", created, engine.ModelId, null, [new ChatChunkChoice(0, delta, null, finish)], usage);

    private static async Task WriteEventAsync<T>(HttpResponse response, T value, JsonTypeInfo<T> type, CancellationToken cancellationToken)
    {
        byte[] json = JsonSerializer.SerializeToUtf8Bytes(value, type);
        byte[] line = new byte[json.Length + 8];
        "data: "u8.CopyTo(line);
        json.CopyTo(line, 6);
        line[^2] = (byte)'\n';
        line[^1] = (byte)'\n';
        await response.Body.WriteAsync(line, cancellationToken);
        await response.Body.FlushAsync(cancellationToken);
    }

    private static string FinishName(FinishReason reason) => reason == FinishReason.Length ? "length" : "stop";

    private static Usage UsageOf(GenerationResult result, Prepared prepared)
    {
        PrefillInfo p = result.Prefill;
        return new Usage(p.PromptTokens, result.CompletionTokens, p.PromptTokens + result.CompletionTokens, new PromptTokensDetails(p.ReusedTokens),
            new KvFetcherUsage(p.ReusedTokens, p.ComputedTokens, Ms(p.TimeToFirstToken), Ms(p.Queue), Ms(p.Fetch), Ms(p.Prefill), p.BytesFetched,
                p.FailedChunks, p.LookupFailed, prepared.TenantName, p.Reuse?.Strategy, p.StoredChunks, p.Reuse?.ComputedChunks ?? 0, p.Reuse?.FetchedChunks ?? 0,
                p.Reuse?.MeetingChunk, p.Reuse?.Variants, p.Reuse?.Plan));
    }

    private static double Ms(TimeSpan span) => Math.Round(span.TotalMilliseconds, 3);

    /// <summary>A validated request, ready for the engine.</summary>
    private sealed record Prepared(GenerationRequest Request, bool IncludeUsage, string TenantName);

    private async Task<(Prepared?, ApiError?)> PrepareChatAsync(HttpContext context)
    {
        (ChatCompletionRequest? body, ApiError? error) = await ReadBodyAsync(context, OpenAiJson.Default.ChatCompletionRequest);
        if (error is not null)
        {
            return (null, error);
        }

        if (CheckModel(body!.Model) is { } unknown)
        {
            return (null, unknown);
        }

        if (body.N is not (null or 1))
        {
            return (null, ApiError.Invalid("Only n = 1 is supported.", "n"));
        }

        if (body.Logprobs.ValueKind == JsonValueKind.True)
        {
            return (null, ApiError.Invalid("logprobs are not supported.", "logprobs"));
        }

        if (body.TopLogprobs.ValueKind is not (JsonValueKind.Undefined or JsonValueKind.Null))
        {
            return (null, ApiError.Invalid("top_logprobs is not supported: it needs logprobs, which are not supported.", "top_logprobs"));
        }

        if (ReadResponseFormat(body.ResponseFormat, out bool json) is { } badFormat)
        {
            return (null, badFormat);
        }

        if (Refuse(new UnsupportedOptions.Requested(body.Tools.ValueKind is not (JsonValueKind.Undefined or JsonValueKind.Null), json, body.PresencePenalty,
                body.FrequencyPenalty, body.TopK)) is { } unsupported)
        {
            return (null, unsupported);
        }

        if (body.Messages is null || body.Messages.Count == 0)
        {
            return (null, ApiError.Invalid("'messages' must be a non-empty array.", "messages"));
        }

        // Every message adds at least one token.
        int window = engine.Model.Config.MaxPositionEmbeddings;
        if (body.Messages.Count >= window)
        {
            return (null, ContextExceeded($"the conversation has {body.Messages.Count} messages", "messages"));
        }

        int? maxTokens = body.MaxCompletionTokens ?? body.MaxTokens;
        string maxTokensName = body.MaxCompletionTokens is null ? "max_tokens" : "max_completion_tokens";
        if (CheckSampling(maxTokens, maxTokensName, body.Temperature, body.TopP, body.Stop, out List<string>? stops) is { } invalid)
        {
            return (null, invalid);
        }

        var turns = new List<ChatTurn>(body.Messages.Count);
        for (int i = 0; i < body.Messages.Count; i++)
        {
            ChatMessageIn? message = body.Messages[i];
            string param = $"messages[{i}]";
            if (message?.Role is not { Length: > 0 and <= 64 } role || !role.All(char.IsAsciiLetterLower))
            {
                return (null, ApiError.Invalid($"{param}.role must be a lower-case role name such as system, user or assistant.", param + ".role"));
            }

            if (ReadContent(message.Content, param + ".content", out string content) is { } badContent)
            {
                return (null, badContent);
            }

            turns.Add(new ChatTurn(role, content));
        }

        string rendered = engine.Template.Render(turns);
        if (CheckPromptLength(rendered.Length, "messages") is { } tooLong)
        {
            return (null, tooLong);
        }

        int[] tokens = engine.EncodeRenderedChat(rendered, context.RequestAborted);
        return Prepare(context, tokens, "messages", maxTokens, maxTokensName, body.Temperature, body.TopP, body.Seed, stops!, engine.Template.StopSequences, body.Stream,
            body.StreamOptions);
    }

    private async Task<(Prepared?, ApiError?)> PrepareCompletionAsync(HttpContext context)
    {
        (CompletionRequest? body, ApiError? error) = await ReadBodyAsync(context, OpenAiJson.Default.CompletionRequest);
        if (error is not null)
        {
            return (null, error);
        }

        if (CheckModel(body!.Model) is { } unknown)
        {
            return (null, unknown);
        }

        if (body.N is not (null or 1) || body.BestOf is not (null or 1))
        {
            return (null, ApiError.Invalid("Only n = 1 and best_of = 1 are supported.", body.N is not (null or 1) ? "n" : "best_of"));
        }

        if (body.Echo == true)
        {
            return (null, ApiError.Invalid("echo is not supported.", "echo"));
        }

        if (body.Logprobs.ValueKind is not (JsonValueKind.Undefined or JsonValueKind.Null))
        {
            return (null, ApiError.Invalid("logprobs are not supported.", "logprobs"));
        }

        if (body.Suffix.ValueKind is not (JsonValueKind.Undefined or JsonValueKind.Null))
        {
            return (null, ApiError.Invalid("suffix (text after the completion) is not supported.", "suffix"));
        }

        if (Refuse(new UnsupportedOptions.Requested(Tools: false, JsonResponseFormat: false, body.PresencePenalty, body.FrequencyPenalty, body.TopK)) is { } unsupported)
        {
            return (null, unsupported);
        }

        if (CheckSampling(body.MaxTokens, "max_tokens", body.Temperature, body.TopP, body.Stop, out List<string>? stops) is { } invalid)
        {
            return (null, invalid);
        }

        if (ReadPrompt(body.Prompt, context.RequestAborted, out int[] tokens) is { } badPrompt)
        {
            return (null, badPrompt);
        }

        if (tokens.Length == 0 || tokens.Any(t => (uint)t >= (uint)engine.Model.Config.VocabSize))
        {
            return (null, ApiError.Invalid($"The prompt must hold at least one token, and token ids must be below {engine.Model.Config.VocabSize}.", "prompt"));
        }

        return Prepare(context, tokens, "prompt", body.MaxTokens, "max_tokens", body.Temperature, body.TopP, body.Seed, stops!, [], body.Stream, body.StreamOptions);
    }

    /// <summary>The checks that need no tokens, made before the prompt is tokenized.</summary>
    private ApiError? CheckSampling(int? maxTokens, string maxTokensName, float? temperature, float? topP, JsonElement stop, out List<string>? stops)
    {
        stops = null;
        if (temperature is float t && !(t is >= 0f and <= 2f))
        {
            return ApiError.Invalid($"temperature must be between 0 and 2; got {t.ToString(CultureInfo.InvariantCulture)}.", "temperature");
        }

        if (topP is float p && !(p is > 0f and <= 1f))
        {
            return ApiError.Invalid($"top_p must be in (0, 1]; got {p.ToString(CultureInfo.InvariantCulture)}.", "top_p");
        }

        if (maxTokens is int requested && requested < 1)
        {
            return ApiError.Invalid($"{maxTokensName} must be at least 1; got {requested}.", maxTokensName);
        }

        // The prompt has at least one token.
        if (maxTokens is int limit && limit >= engine.Model.Config.MaxPositionEmbeddings)
        {
            return ContextExceeded($"{maxTokensName} ({limit}) leaves no room for a prompt", maxTokensName);
        }

        return ReadStops(stop, out stops);
    }

    /// <summary>The 400 for an option the shared rule refuses (the in-process client throws the same message).</summary>
    private static ApiError? Refuse(in UnsupportedOptions.Requested requested) =>
        UnsupportedOptions.Find(requested) is { } refusal ? ApiError.Invalid(refusal.Message, refusal.Param) : null;

    /// <summary>Absent, null or <c>{"type": "text"}</c>: text; <c>{"type": "json_object" | "json_schema"}</c>: JSON; anything else is invalid.</summary>
    private static ApiError? ReadResponseFormat(JsonElement format, out bool json)
    {
        json = false;
        if (format.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null)
        {
            return null;
        }

        if (format.ValueKind == JsonValueKind.Object && format.TryGetProperty("type", out JsonElement type) && type.ValueKind == JsonValueKind.String)
        {
            if (type.ValueEquals("text"))
            {
                return null;
            }

            if (type.ValueEquals("json_object") || type.ValueEquals("json_schema"))
            {
                json = true;
                return null;
            }
        }

        return ApiError.Invalid("response_format must be an object whose type is \"text\", \"json_object\" or \"json_schema\".", "response_format");
    }

    private ApiError? CheckPromptLength(long characters, string param) =>
        characters > engine.MaxPromptCharacters
            ? ContextExceeded($"the prompt has {characters} characters, more than the {engine.MaxPromptCharacters} characters such a context can hold", param)
            : null;

    private ApiError ContextExceeded(string what, string param) =>
        ApiError.Invalid($"This model's maximum context length is {engine.Model.Config.MaxPositionEmbeddings} tokens; {what}.", param, "context_length_exceeded");

    private (Prepared?, ApiError?) Prepare(HttpContext context, int[] tokens, string promptName, int? maxTokens, string maxTokensName, float? temperature, float? topP, long? seed,
        List<string> stops, IReadOnlyList<string> implicitStops, bool? stream, StreamOptions? streamOptions)
    {
        int window = engine.Model.Config.MaxPositionEmbeddings;
        if (tokens.Length >= window)
        {
            return (null, ContextExceeded($"the prompt has {tokens.Length} tokens", promptName));
        }

        if (maxTokens is int limit && (long)tokens.Length + limit > window)
        {
            return (null, ContextExceeded($"the prompt ({tokens.Length}) and {maxTokensName} ({limit}) exceed it", maxTokensName));
        }

        (string? salt, string tenantName, ApiError? tenantError) = ResolveTenant(context);
        if (tenantError is not null)
        {
            return (null, tenantError);
        }

        var request = new GenerationRequest
        {
            Prompt = tokens,
            TenantSalt = salt!,
            Tenant = tenantName,
            MaxTokens = maxTokens ?? Math.Min(engine.Options.DefaultMaxTokens, window - tokens.Length),
            // OpenAI's default temperature is 1.
            Temperature = temperature ?? 1f,
            TopP = topP ?? 1f,
            Seed = seed is long s ? unchecked((int)(s ^ (s >> 32))) : null,
            StopSequences = [.. stops, .. implicitStops],
            Stream = stream == true,
        };
        return (new Prepared(request, streamOptions?.IncludeUsage == true, tenantName), null);
    }

    /// <summary>The tenant salt of a request: its API key's (with <see cref="LlmServerOptions.TenantFromKey"/>), or the header's, or the default.</summary>
    private (string? Salt, string Name, ApiError? Error) ResolveTenant(HttpContext context)
    {
        string? named = context.Request.Headers[TenantHeader].Count switch
        {
            0 => null,
            1 => context.Request.Headers[TenantHeader][0],
            _ => "\n", // several headers: invalid below
        };
        if (named is not null && (named.Length == 0 || !TenantSalts.IsValidName(named)))
        {
            return (null, "", ApiError.Invalid($"{TenantHeader} must have 1 to {TenantSalts.MaxTenantLength} characters of [A-Za-z0-9._-].", TenantHeader));
        }

        if (options.TenantFromKey)
        {
            string key = BearerTokens.Presented(context.Request)!;
            string salt = TenantSalts.ForKey(key, named ?? "");
            return (salt, salt, null);
        }

        string tenant = named ?? engine.Options.DefaultTenant;
        return (tenant, tenant, null);
    }

    private ApiError? CheckModel(string? model) =>
        model is null || model == engine.ModelId
            ? null
            : new ApiError(StatusCodes.Status404NotFound, $"The model '{model}' does not exist; this server serves '{engine.ModelId}'.", "invalid_request_error", "model", "model_not_found");

    // A string, an array of one string, or an array of token ids; text longer than the context can hold is refused
    // before it is tokenized.
    private ApiError? ReadPrompt(JsonElement prompt, CancellationToken cancellationToken, out int[] tokens)
    {
        tokens = [];
        JsonElement text;
        switch (prompt.ValueKind)
        {
            case JsonValueKind.String:
                text = prompt;
                break;
            case JsonValueKind.Array when prompt.GetArrayLength() == 1 && prompt[0].ValueKind == JsonValueKind.String:
                text = prompt[0];
                break;
            case JsonValueKind.Array when prompt.GetArrayLength() > 0 && prompt.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Number):
                if (prompt.GetArrayLength() >= engine.Model.Config.MaxPositionEmbeddings)
                {
                    return ContextExceeded($"the prompt has {prompt.GetArrayLength()} tokens", "prompt");
                }

                var ids = new int[prompt.GetArrayLength()];
                int i = 0;
                foreach (JsonElement id in prompt.EnumerateArray())
                {
                    if (!id.TryGetInt32(out ids[i++]))
                    {
                        return InvalidPrompt();
                    }
                }

                tokens = ids;
                return null;
            default:
                return InvalidPrompt();
        }

        if (!TryGetText(text, out string value))
        {
            return NotText("prompt");
        }

        if (CheckPromptLength(value.Length, "prompt") is { } tooLong)
        {
            return tooLong;
        }

        tokens = engine.EncodeText(value, cancellationToken);
        return null;

        static ApiError InvalidPrompt() => ApiError.Invalid("'prompt' must be a string, an array of one string, or an array of token ids.", "prompt");
    }

    private static ApiError? ReadContent(JsonElement content, string param, out string text)
    {
        text = "";
        switch (content.ValueKind)
        {
            case JsonValueKind.String:
                return TryGetText(content, out text) ? null : NotText(param);
            case JsonValueKind.Array:
                var joined = new StringBuilder();
                foreach (JsonElement part in content.EnumerateArray())
                {
                    if (part.ValueKind != JsonValueKind.Object || !part.TryGetProperty("type", out JsonElement type) || !type.ValueEquals("text")
                        || !part.TryGetProperty("text", out JsonElement value) || value.ValueKind != JsonValueKind.String)
                    {
                        return InvalidContent();
                    }

                    if (!TryGetText(value, out string piece))
                    {
                        return NotText(param);
                    }

                    joined.Append(piece);
                }

                text = joined.ToString();
                return null;
            default:
                return InvalidContent();
        }

        ApiError InvalidContent() => ApiError.Invalid($"{param} must be a string or an array of text parts.", param);
    }

    private static ApiError? ReadStops(JsonElement stop, out List<string>? stops)
    {
        stops = [];
        switch (stop.ValueKind)
        {
            case JsonValueKind.Undefined or JsonValueKind.Null:
                return null;
            case JsonValueKind.String:
                if (!TryGetText(stop, out string single))
                {
                    return NotText("stop");
                }

                stops.Add(single);
                return single.Length > 0 ? null : InvalidStop();
            case JsonValueKind.Array when stop.GetArrayLength() <= MaxStopSequences:
                foreach (JsonElement item in stop.EnumerateArray())
                {
                    if (item.ValueKind != JsonValueKind.String)
                    {
                        return InvalidStop();
                    }

                    if (!TryGetText(item, out string text))
                    {
                        return NotText("stop");
                    }

                    if (text.Length == 0)
                    {
                        return InvalidStop();
                    }

                    stops.Add(text);
                }

                return null;
            default:
                return InvalidStop();
        }

        static ApiError InvalidStop() => ApiError.Invalid($"stop must be a non-empty string or an array of at most {MaxStopSequences} non-empty strings.", "stop");
    }

    // A JSON string that is not text: raw bytes that are not UTF-8, or an escaped lone surrogate ("\ud800"), which
    // JsonElement.GetString refuses with InvalidOperationException.
    private static bool TryGetText(JsonElement element, out string text)
    {
        try
        {
            text = element.GetString() ?? "";
            return true;
        }
        catch (InvalidOperationException)
        {
            text = "";
            return false;
        }
    }

    private static ApiError NotText(string param) =>
        ApiError.Invalid($"{param} is not valid text: it holds bytes that are not UTF-8 or an unpaired surrogate escape.", param);

    // The body is read whole (Kestrel caps its size), checked to be UTF-8 (JSON is; the reader does not check strings
    // it skips or keeps as elements), then parsed.
    private static async Task<(T?, ApiError?)> ReadBodyAsync<T>(HttpContext context, JsonTypeInfo<T> type)
        where T : class
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent((int)Math.Clamp(context.Request.ContentLength ?? 0, 4096, 1 << 20));
        try
        {
            int length = 0;
            while (true)
            {
                if (length == buffer.Length)
                {
                    byte[] larger = ArrayPool<byte>.Shared.Rent(buffer.Length * 2);
                    buffer.AsSpan(0, length).CopyTo(larger);
                    ArrayPool<byte>.Shared.Return(buffer);
                    buffer = larger;
                }

                int read = await context.Request.Body.ReadAsync(buffer.AsMemory(length), context.RequestAborted);
                if (read == 0)
                {
                    break;
                }

                length += read;
            }

            ReadOnlySpan<byte> json = buffer.AsSpan(0, length);
            if (!Utf8.IsValid(json))
            {
                return (null, ApiError.Invalid($"The request body is not valid UTF-8: the bytes at offset {FirstInvalidUtf8(json)} do not form a character."));
            }

            T? body = JsonSerializer.Deserialize(json, type);
            return body is null ? (null, ApiError.Invalid("The request body must be a JSON object.")) : (body, null);
        }
        catch (JsonException ex)
        {
            return (null, JsonBodyError.From(ex, type));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static int FirstInvalidUtf8(ReadOnlySpan<byte> bytes)
    {
        int offset = 0;
        while (offset < bytes.Length && Rune.DecodeFromUtf8(bytes[offset..], out _, out int consumed) == OperationStatus.Done)
        {
            offset += consumed;
        }

        return offset;
    }

    private Task ModelsAsync(HttpContext context) =>
        context.Response.WriteAsJsonAsync(new ModelList("list", [Info()]), OpenAiJson.Default.ModelList, cancellationToken: context.RequestAborted);

    private Task ModelAsync(HttpContext context)
    {
        return context.Request.RouteValues["id"] as string == engine.ModelId
            ? context.Response.WriteAsJsonAsync(Info(), OpenAiJson.Default.ModelInfo, cancellationToken: context.RequestAborted)
            : CheckModel(context.Request.RouteValues["id"] as string ?? "")!.WriteAsync(context);
    }

    private ModelInfo Info() => new(engine.ModelId, "model", s_created, "kvfetcher");

    private Task HealthAsync(HttpContext context) =>
        context.Response.WriteAsJsonAsync(new HealthResponse("ok", engine.ModelId, engine.ReuseEnabled, engine.Scheduler.ActiveSessions, engine.Scheduler.QueuedRequests),
            OpenAiJson.Default.HealthResponse, cancellationToken: context.RequestAborted);
}
