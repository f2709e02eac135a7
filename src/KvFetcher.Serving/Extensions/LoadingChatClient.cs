using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;

namespace KvFetcher.Serving.Extensions;

/// <summary>
/// The container's <see cref="IChatClient"/>: a <see cref="KvFetcherChatClient"/> over the engine of a
/// <see cref="KvFetcherEngineLoader"/>, resolved at once and awaiting the engine on its first request.
/// </summary>
internal sealed class LoadingChatClient : IChatClient
{
    private readonly KvFetcherEngineLoader _loader;
    private KvFetcherChatClient? _client;

    public LoadingChatClient(KvFetcherEngineLoader loader)
    {
        _loader = loader;
        Metadata = new ChatClientMetadata("kvfetcher", defaultModelId: loader.Options.ResolveModelId());
    }

    public ChatClientMetadata Metadata { get; }

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        KvFetcherChatClient client = await ClientAsync(cancellationToken).ConfigureAwait(false);
        return await client.GetResponseAsync(messages, options, cancellationToken).ConfigureAwait(false);
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        KvFetcherChatClient client = await ClientAsync(cancellationToken).ConfigureAwait(false);
        await foreach (ChatResponseUpdate update in client.GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false))
        {
            yield return update;
        }
    }

    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is null && serviceType == typeof(ChatClientMetadata))
        {
            return Metadata;
        }

        if (serviceKey is null && serviceType.IsInstanceOfType(this))
        {
            return this;
        }

        return _loader.IsLoaded ? Client(_loader.Engine).GetService(serviceType, serviceKey) : null;
    }

    // The engine is the loader's (disposed with the container), not this client's.
    public void Dispose()
    {
    }

    private async ValueTask<KvFetcherChatClient> ClientAsync(CancellationToken cancellationToken) =>
        Volatile.Read(ref _client) ?? Client(await _loader.GetEngineAsync(cancellationToken).ConfigureAwait(false));

    private KvFetcherChatClient Client(KvFetcherEngine engine)
    {
        var client = new KvFetcherChatClient(engine);
        return Interlocked.CompareExchange(ref _client, client, null) ?? client;
    }
}
