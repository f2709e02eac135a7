using System.Text.Json.Nodes;

namespace KvFetcher.Engine.Tests.Tokenization;

/// <summary>
/// Builds small byte-level BPE <c>tokenizer.json</c> files in the Hugging Face format: ids 0..255 are the 256
/// byte symbols in byte order, then one id per merge result, then extra vocabulary words, then added tokens.
/// </summary>
public sealed class TokenizerFixture
{
    // The Llama 3 split regex (a Split pre-tokenizer followed by ByteLevel with use_regex = false).
    public const string Llama3Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    public static readonly (string Left, string Right)[] DefaultMerges =
    [
        ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("in", "g"), ("e", "r"), ("l", "l"), ("Ġ", "w"),
        ("o", "r"), ("Ġw", "or"), ("l", "d"), ("Ġwor", "ld"), ("H", "e"), ("He", "ll"), ("Hell", "o"),
        ("Ċ", "Ċ"), ("Ġ", "Ġ"), ("Ã", "©"), ("ð", "Ł"), ("Ġ", "a"),
    ];

    private static readonly char[] s_byteToChar = BuildAlphabet();

    public List<(string Left, string Right)> Merges { get; init; } = [.. DefaultMerges];

    /// <summary>Vocabulary words with no merge producing them (for ignore_merges).</summary>
    public List<string> ExtraWords { get; init; } = ["Ġxyz"];

    public List<(string Content, bool Special, bool LStrip, bool RStrip)> AddedTokens { get; init; } =
    [
        ("<|begin_of_text|>", true, false, false),
        ("<|eot_id|>", true, false, false),
        ("<mask>", false, true, false),
    ];

    /// <summary>"llama3" (Split + ByteLevel without regex) or "gpt2" (a bare ByteLevel with its regex).</summary>
    public string PreTokenizer { get; init; } = "llama3";

    public bool IgnoreMerges { get; init; }

    public bool Nfc { get; init; }

    public bool MergesAsArrays { get; init; }

    /// <summary>When set, a TemplateProcessing post-processor puts this token before each sequence.</summary>
    public string? TemplateBos { get; init; }

    /// <summary>The byte-level symbol of each byte, as GPT-2 defines it.</summary>
    public static string Symbol(byte value) => s_byteToChar[value].ToString();

    /// <summary>The byte-level form of a string's UTF-8 bytes.</summary>
    public static string ToSymbols(string text) =>
        string.Concat(System.Text.Encoding.UTF8.GetBytes(text).Select(b => s_byteToChar[b]));

    public Dictionary<string, int> Vocabulary()
    {
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++)
        {
            vocab.Add(Symbol((byte)b), b);
        }

        foreach ((string left, string right) in Merges)
        {
            vocab.TryAdd(left + right, vocab.Count);
        }

        foreach (string word in ExtraWords)
        {
            vocab.TryAdd(word, vocab.Count);
        }

        return vocab;
    }

    /// <summary>The id of each added token, in <see cref="AddedTokens"/> order, after the vocabulary.</summary>
    public int AddedId(string content)
    {
        int index = AddedTokens.FindIndex(t => t.Content == content);
        Assert.True(index >= 0, content);
        return Vocabulary().Count + index;
    }

    public int Id(string symbols) => Vocabulary()[symbols];

    public int TotalSize => Vocabulary().Count + AddedTokens.Count;

    public JsonObject Build()
    {
        Dictionary<string, int> vocabulary = Vocabulary();
        var vocab = new JsonObject();
        foreach ((string token, int id) in vocabulary)
        {
            vocab[token] = id;
        }

        var merges = new JsonArray();
        foreach ((string left, string right) in Merges)
        {
            merges.Add(MergesAsArrays ? new JsonArray(left, right) : JsonValue.Create($"{left} {right}"));
        }

        var added = new JsonArray();
        foreach ((string content, bool special, bool lstrip, bool rstrip) in AddedTokens)
        {
            added.Add(new JsonObject
            {
                ["id"] = AddedId(content),
                ["content"] = content,
                ["single_word"] = false,
                ["lstrip"] = lstrip,
                ["rstrip"] = rstrip,
                ["normalized"] = false,
                ["special"] = special,
            });
        }

        JsonNode preTokenizer = PreTokenizer == "gpt2"
            ? new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true }
            : new JsonObject
            {
                ["type"] = "Sequence",
                ["pretokenizers"] = new JsonArray(
                    new JsonObject
                    {
                        ["type"] = "Split",
                        ["pattern"] = new JsonObject { ["Regex"] = Llama3Pattern },
                        ["behavior"] = "Isolated",
                        ["invert"] = false,
                    },
                    new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false }),
            };

        JsonNode? postProcessor = TemplateBos is null
            ? new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = false, ["use_regex"] = true }
            : new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = TemplateBos, ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
                ["pair"] = new JsonArray(
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = TemplateBos, ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "B", ["type_id"] = 1 } }),
                ["special_tokens"] = new JsonObject
                {
                    [TemplateBos] = new JsonObject
                    {
                        ["id"] = TemplateBos,
                        ["ids"] = new JsonArray(AddedId(TemplateBos)),
                        ["tokens"] = new JsonArray(TemplateBos),
                    },
                },
            };

        return new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = Nfc ? new JsonObject { ["type"] = "NFC" } : null,
            ["pre_tokenizer"] = preTokenizer,
            ["post_processor"] = postProcessor,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["dropout"] = null,
                ["unk_token"] = null,
                ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null,
                ["fuse_unk"] = false,
                ["byte_fallback"] = false,
                ["ignore_merges"] = IgnoreMerges,
                ["vocab"] = vocab,
                ["merges"] = merges,
            },
        };
    }

    public void WriteTo(string directory, Action<JsonObject>? edit = null)
    {
        JsonObject json = Build();
        edit?.Invoke(json);
        File.WriteAllText(Path.Combine(directory, "tokenizer.json"), json.ToJsonString());
    }

    private static char[] BuildAlphabet()
    {
        // GPT-2: printable Latin-1 bytes keep their code point; the rest take 256, 257, ... in byte order.
        var printable = new List<int>();
        printable.AddRange(Enumerable.Range('!', '~' - '!' + 1));
        printable.AddRange(Enumerable.Range(0xA1, 0xAC - 0xA1 + 1));
        printable.AddRange(Enumerable.Range(0xAE, 0xFF - 0xAE + 1));
        char[] map = new char[256];
        int extra = 0;
        for (int b = 0; b < 256; b++)
        {
            map[b] = printable.Contains(b) ? (char)b : (char)(256 + extra++);
        }

        return map;
    }
}
