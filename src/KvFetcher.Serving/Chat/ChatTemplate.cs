using System.Text;
using System.Text.Json;
using KvFetcher.Engine.Tokenization;

namespace KvFetcher.Serving.Chat;

/// <summary>One message of a conversation: <c>system</c>, <c>user</c>, <c>assistant</c> (or another role name) and its text.</summary>
public readonly record struct ChatTurn(string Role, string Content);

/// <summary>
/// Turns a conversation into the prompt text a model was trained on. There is no Jinja engine here: the
/// <c>chat_template</c> of <c>tokenizer_config.json</c> is recognised by its markers and rendered by a built-in
/// equivalent, for two shapes: ChatML (<c>&lt;|im_start|&gt;</c>: Qwen2 and others) and Llama 3
/// (<c>&lt;|start_header_id|&gt;</c>). A model without a template (such as the bundled one, trained on documentation
/// only) or with a template of another shape gets the <see cref="Plain"/> template: <c>System:</c>, <c>User:</c>
/// and <c>Assistant:</c> paragraphs, ending in <c>Assistant:</c>, with <c>"\n\nUser:"</c> as a stop sequence.
/// </summary>
public sealed class ChatTemplate
{
    private const string PlainStop = "\n\nUser:";

    private readonly Func<IReadOnlyList<ChatTurn>, string> _render;

    private ChatTemplate(string name, bool addSpecialTokens, IReadOnlyList<string> stopSequences, Func<IReadOnlyList<ChatTurn>, string> render, string? unrecognised = null)
    {
        Name = name;
        AddSpecialTokens = addSpecialTokens;
        StopSequences = stopSequences;
        _render = render;
        Unrecognised = unrecognised;
    }

    /// <summary><c>plain</c>, <c>chatml</c> or <c>llama3</c>.</summary>
    public string Name { get; }

    /// <summary>Whether the rendered text is encoded with the tokenizer's own special tokens (BOS) added.</summary>
    public bool AddSpecialTokens { get; }

    /// <summary>Stop sequences every chat request gets besides its own (the end-of-turn marker).</summary>
    public IReadOnlyList<string> StopSequences { get; }

    /// <summary>Why the model's own template was not used (it had one of an unsupported shape); null otherwise.</summary>
    public string? Unrecognised { get; }

    /// <summary>The fallback for models without a supported template.</summary>
    public static ChatTemplate Plain { get; } = new("plain", addSpecialTokens: true, [PlainStop], RenderPlain);

    public static ChatTemplate ChatMl { get; } = new("chatml", addSpecialTokens: false, ["<|im_end|>"], RenderChatMl);

    public static ChatTemplate Llama3 { get; } = new("llama3", addSpecialTokens: false, ["<|eot_id|>"], RenderLlama3);

    /// <summary>
    /// The template of the model in <paramref name="modelDirectory"/>: its <c>chat_template</c> when of a supported shape
    /// (and the tokenizer knows the shape's special tokens), else <see cref="Plain"/>.
    /// </summary>
    public static ChatTemplate ForModel(string modelDirectory, TextTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        ArgumentNullException.ThrowIfNull(tokenizer);
        string path = Path.Combine(modelDirectory, TextTokenizer.TokenizerConfigFileName);
        string? template = File.Exists(path) ? ReadTemplate(path) : null;
        return Recognise(template, tokenizer);
    }

    /// <summary>The built-in template equivalent to <paramref name="template"/> (Jinja source), or <see cref="Plain"/>.</summary>
    public static ChatTemplate Recognise(string? template, TextTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (string.IsNullOrWhiteSpace(template))
        {
            return Plain;
        }

        if (template.Contains("<|start_header_id|>", StringComparison.Ordinal) && tokenizer.GetAddedTokenId("<|start_header_id|>") is not null)
        {
            return Llama3;
        }

        if (template.Contains("<|im_start|>", StringComparison.Ordinal) && tokenizer.GetAddedTokenId("<|im_start|>") is not null)
        {
            return ChatMl;
        }

        return new ChatTemplate(Plain.Name, Plain.AddSpecialTokens, Plain.StopSequences, RenderPlain,
            "the model's chat_template is neither ChatML nor Llama 3 (no Jinja engine here); the plain template is used");
    }

    /// <summary>The prompt for <paramref name="messages"/>, ending where the assistant's answer begins.</summary>
    public string Render(IReadOnlyList<ChatTurn> messages)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (messages.Count == 0)
        {
            throw new ArgumentException("A conversation needs at least one message.", nameof(messages));
        }

        return _render(messages);
    }

    private static string? ReadTemplate(string path)
    {
        using JsonDocument config = JsonDocument.Parse(File.ReadAllBytes(path));
        if (!config.RootElement.TryGetProperty("chat_template", out JsonElement template))
        {
            return null;
        }

        if (template.ValueKind == JsonValueKind.String)
        {
            return template.GetString();
        }

        // A list of named templates: the one named "default".
        if (template.ValueKind == JsonValueKind.Array)
        {
            foreach (JsonElement entry in template.EnumerateArray())
            {
                if (entry.ValueKind == JsonValueKind.Object && entry.TryGetProperty("name", out JsonElement name) && name.ValueEquals("default")
                    && entry.TryGetProperty("template", out JsonElement text) && text.ValueKind == JsonValueKind.String)
                {
                    return text.GetString();
                }
            }
        }

        return null;
    }

    private static string RenderPlain(IReadOnlyList<ChatTurn> messages)
    {
        var text = new StringBuilder();
        foreach (ChatTurn turn in messages)
        {
            string label = turn.Role switch
            {
                "system" or "developer" => "System",
                "user" => "User",
                "assistant" => "Assistant",
                "" => "User",
                _ => char.ToUpperInvariant(turn.Role[0]) + turn.Role[1..],
            };
            text.Append(label).Append(": ").Append(turn.Content.Trim()).Append("\n\n");
        }

        return text.Append("Assistant:").ToString();
    }

    private static string RenderChatMl(IReadOnlyList<ChatTurn> messages)
    {
        var text = new StringBuilder();
        foreach (ChatTurn turn in messages)
        {
            text.Append("<|im_start|>").Append(turn.Role).Append('\n').Append(turn.Content).Append("<|im_end|>\n");
        }

        return text.Append("<|im_start|>assistant\n").ToString();
    }

    private static string RenderLlama3(IReadOnlyList<ChatTurn> messages)
    {
        var text = new StringBuilder("<|begin_of_text|>");
        foreach (ChatTurn turn in messages)
        {
            text.Append("<|start_header_id|>").Append(turn.Role).Append("<|end_header_id|>\n\n").Append(turn.Content.Trim()).Append("<|eot_id|>");
        }

        return text.Append("<|start_header_id|>assistant<|end_header_id|>\n\n").ToString();
    }
}
