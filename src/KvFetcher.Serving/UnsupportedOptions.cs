namespace KvFetcher.Serving;

/// <summary>
/// The one rule for the generation options KvFetcher does not serve, shared by the HTTP API (a 400 whose
/// <c>param</c> is <see cref="Refusal.Param"/>) and the in-process <see cref="Extensions.KvFetcherChatClient"/> (a
/// <see cref="NotSupportedException"/>), so that both refuse the same requests with the same words: tools (function
/// calling), a JSON response format (<c>json_object</c>, <c>json_schema</c>), presence and frequency penalties other
/// than 0, and top-k sampling.
/// </summary>
internal static class UnsupportedOptions
{
    /// <summary>What is refused: the wire name of the option and the message both callers show.</summary>
    public sealed record Refusal(string Param, string Message);

    public static readonly Refusal Tools = new("tools", "Tools (function calling) are not supported.");

    public static readonly Refusal JsonResponseFormat =
        new("response_format", "JSON response formats (json_object, json_schema) are not supported; only the text format is.");

    public static readonly Refusal TopK = new("top_k", "top_k is not supported; sample with temperature and top_p.");

    /// <summary>The first option in <paramref name="requested"/> that is not served, or null when all are.</summary>
    public static Refusal? Find(in Requested requested)
    {
        if (requested.Tools)
        {
            return Tools;
        }

        if (requested.JsonResponseFormat)
        {
            return JsonResponseFormat;
        }

        if (requested.PresencePenalty is not (null or 0f) || requested.FrequencyPenalty is not (null or 0f))
        {
            return new Refusal(requested.PresencePenalty is not (null or 0f) ? "presence_penalty" : "frequency_penalty",
                "presence_penalty and frequency_penalty are not supported (only 0).");
        }

        return requested.TopK is null ? null : TopK;
    }

    /// <summary>The options a request asks for, whatever its shape (an HTTP body or <c>ChatOptions</c>).</summary>
    public readonly record struct Requested(bool Tools, bool JsonResponseFormat, float? PresencePenalty, float? FrequencyPenalty, int? TopK);
}
