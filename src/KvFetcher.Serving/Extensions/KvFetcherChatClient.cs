using System.Runtime.CompilerServices;
using KvFetcher.Serving.Chat;
using KvFetcher.Serving.Scheduling;
using Microsoft.Extensions.AI;

namespace KvFetcher.Serving.Extensions;

/// <summary>
/// <see cref="IChatClient"/> over a <see cref="KvFetcherEngine"/> in the same process: the engine's scheduler, chat
/// template and automatic KV reuse, without HTTP. Usage reports the reused prompt tokens as
/// <see cref="UsageDetails.CachedInputTokenCount"/> and the TTFT parts in <see cref="UsageDetails.AdditionalCounts"/>
/// (<c>kvfetcher.ttft_us</c>, <c>kvfetcher.fetch_us</c>, ...). Text content of every message is used; other content
/// (images, function calls) is refused, and so are the options <see cref="UnsupportedOptions"/> lists (tools, a JSON
/// response format, penalties, top-k), with a <see cref="NotSupportedException"/> worded as the HTTP API's 400.
/// </summary>
public sealed class KvFetcherChatClient : IChatClient
{
    private readonly KvFetcherEngine _engine;
    private readonly string _tenantSalt;
    private readonly bool _ownsEngine;

    /// <param name="engine">The engine to run on.</param>
    /// <param name="tenantSalt">The tenant of this client's contexts (default: the engine's default tenant).</param>
    /// <param name="ownsEngine">Dispose the engine with the client.</param>
    public KvFetcherChatClient(KvFetcherEngine engine, string? tenantSalt = null, bool ownsEngine = false)
    {
        ArgumentNullException.ThrowIfNull(engine);
        _engine = engine;
        _tenantSalt = tenantSalt ?? engine.Options.DefaultTenant;
        _ownsEngine = ownsEngine;
        Metadata = new ChatClientMetadata("kvfetcher", defaultModelId: engine.ModelId);
    }

    public ChatClientMetadata Metadata { get; }

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        Generation generation = Submit(messages, options, stream: false, cancellationToken);
        GenerationResult result = await generation.Completion.ConfigureAwait(false);
        string id = NewId();
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, result.Text) { MessageId = id })
        {
            ResponseId = id,
            ModelId = _engine.ModelId,
            FinishReason = Finish(result.FinishReason),
            Usage = UsageOf(result),
            CreatedAt = DateTimeOffset.UtcNow,
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        Generation generation = Submit(messages, options, stream: true, cancellationToken);
        string id = NewId();
        await foreach (string piece in generation.Text.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            yield return new ChatResponseUpdate(ChatRole.Assistant, piece) { ModelId = _engine.ModelId, ResponseId = id, MessageId = id };
        }

        GenerationResult result = await generation.Completion.ConfigureAwait(false);
        yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(UsageOf(result))])
        {
            ModelId = _engine.ModelId,
            ResponseId = id,
            MessageId = id,
            FinishReason = Finish(result.FinishReason),
        };
    }

    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null)
        {
            return null;
        }

        if (serviceType == typeof(ChatClientMetadata))
        {
            return Metadata;
        }

        if (serviceType.IsInstanceOfType(this))
        {
            return this;
        }

        return serviceType.IsInstanceOfType(_engine) ? _engine : null;
    }

    public void Dispose()
    {
        if (_ownsEngine)
        {
            _engine.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    private Generation Submit(IEnumerable<ChatMessage> messages, ChatOptions? options, bool stream, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (options?.ModelId is { } model && model != _engine.ModelId)
        {
            throw new ArgumentException($"The model '{model}' is not served here; this engine runs '{_engine.ModelId}'.", nameof(options));
        }

        if (options is not null && UnsupportedOptions.Find(new UnsupportedOptions.Requested(options.Tools is { Count: > 0 }, options.ResponseFormat is ChatResponseFormatJson,
                options.PresencePenalty, options.FrequencyPenalty, options.TopK)) is { } refusal)
        {
            // The same rule and words as the HTTP API's 400.
            throw new NotSupportedException(refusal.Message);
        }

        var turns = new List<ChatTurn>();
        foreach (ChatMessage message in messages)
        {
            if (message.Contents.Any(c => c is not TextContent))
            {
                throw new NotSupportedException("Only text content is supported.");
            }

            turns.Add(new ChatTurn(message.Role.Value, message.Text));
        }

        int[] prompt = _engine.EncodeChat(turns, cancellationToken);
        int window = _engine.Model.Config.MaxPositionEmbeddings;
        int maxTokens = options?.MaxOutputTokens ?? Math.Min(_engine.Options.DefaultMaxTokens, Math.Max(1, window - prompt.Length));
        return _engine.Submit(new GenerationRequest
        {
            Prompt = prompt,
            TenantSalt = _tenantSalt,
            MaxTokens = maxTokens,
            Temperature = options?.Temperature ?? 1f,
            TopP = options?.TopP ?? 1f,
            Seed = options?.Seed is long seed ? unchecked((int)(seed ^ (seed >> 32))) : null,
            StopSequences = [.. options?.StopSequences ?? [], .. _engine.Template.StopSequences],
            Stream = stream,
        }, cancellationToken);
    }

    /// <summary>An id in the HTTP API's form (<c>chatcmpl-</c> and 24 hex digits).</summary>
    private static string NewId() => "chatcmpl-" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(12));

    private static ChatFinishReason Finish(FinishReason reason) => reason == FinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop;

    private static UsageDetails UsageOf(GenerationResult result)
    {
        PrefillInfo p = result.Prefill;
        return new UsageDetails
        {
            InputTokenCount = p.PromptTokens,
            OutputTokenCount = result.CompletionTokens,
            TotalTokenCount = p.PromptTokens + result.CompletionTokens,
            CachedInputTokenCount = p.ReusedTokens,
            AdditionalCounts = new AdditionalPropertiesDictionary<long>
            {
                ["kvfetcher.reused_tokens"] = p.ReusedTokens,
                ["kvfetcher.computed_tokens"] = p.ComputedTokens,
                ["kvfetcher.ttft_us"] = (long)p.TimeToFirstToken.TotalMicroseconds,
                ["kvfetcher.queue_us"] = (long)p.Queue.TotalMicroseconds,
                ["kvfetcher.fetch_us"] = (long)p.Fetch.TotalMicroseconds,
                ["kvfetcher.prefill_us"] = (long)p.Prefill.TotalMicroseconds,
                ["kvfetcher.bytes_fetched"] = p.BytesFetched,
                ["kvfetcher.fallback_chunks"] = p.FailedChunks,
            },
        };
    }
}
