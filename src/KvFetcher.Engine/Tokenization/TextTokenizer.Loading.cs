using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using KvFetcher.Engine.Model;

namespace KvFetcher.Engine.Tokenization;

public sealed partial class TextTokenizer
{
    /// <summary>The tokenizer file name.</summary>
    public const string TokenizerFileName = "tokenizer.json";

    /// <summary>The optional tokenizer settings file name.</summary>
    public const string TokenizerConfigFileName = "tokenizer_config.json";

    // The pre-tokenizer regex of GPT-2, which a ByteLevel pre-tokenizer with use_regex = true applies.
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private TextTokenizer(
        string directory,
        BytePairMerger bpe,
        Dictionary<string, int> vocabulary,
        bool ignoreMerges,
        NormalizationForm? normalization,
        PreTokenizerStep[] preTokenizer,
        List<AddedToken> addedTokens,
        string?[] tokens,
        bool[] special,
        int? bosId,
        bool addBos,
        HashSet<int> eosIds)
    {
        Directory = directory;
        _bpe = bpe;
        _vocabulary = vocabulary;
        _ignoreMerges = ignoreMerges;
        _normalization = normalization;
        _preTokenizer = preTokenizer;
        _addedByContent = addedTokens.ToDictionary(t => t.Content, StringComparer.Ordinal);
        _addedByFirstChar = addedTokens
            .GroupBy(t => t.Content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ToArray());
        VocabSize = tokens.Length;
        _special = special;
        _known = new bool[tokens.Length];
        _tokenOffsets = new int[tokens.Length + 1];
        var bytes = new List<byte>(tokens.Length * 6);
        for (int id = 0; id < tokens.Length; id++)
        {
            _tokenOffsets[id] = bytes.Count;
            if (tokens[id] is string token)
            {
                _known[id] = true;
                bytes.AddRange(ByteLevelAlphabet.Decode(token));
            }
        }

        _tokenOffsets[tokens.Length] = bytes.Count;
        _tokenBytes = [.. bytes];
        int longest = 1;
        for (int id = 0; id < tokens.Length; id++)
        {
            longest = Math.Max(longest, _tokenOffsets[id + 1] - _tokenOffsets[id]);
        }

        MaxCharactersPerToken = addedTokens.Any(t => t.LStrip || t.RStrip)
            ? int.MaxValue
            : normalization == NormalizationForm.FormC ? 4 * longest : longest;
        BosId = bosId;
        AddBos = addBos;
        EosIds = eosIds;
    }

    /// <summary>
    /// Loads <c>tokenizer.json</c> (and <c>tokenizer_config.json</c> when present) from
    /// <paramref name="modelDirectory"/>. Only byte-level BPE tokenizers are supported.
    /// </summary>
    /// <exception cref="InvalidModelException">A file is missing or malformed, the tokenizer is not byte-level BPE,
    /// or its ids do not fit the model's vocabulary.</exception>
    public static TextTokenizer Load(string modelDirectory, ModelConfig config)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelDirectory);
        ArgumentNullException.ThrowIfNull(config);
        string directory = Path.GetFullPath(modelDirectory);
        string path = Path.Combine(directory, TokenizerFileName);
        if (!File.Exists(path))
        {
            throw new InvalidModelException(path, "the tokenizer file does not exist (only tokenizer.json files are supported).");
        }

        using JsonDocument document = JsonFields.ParseFile(path);
        JsonElement root = JsonFields.RootObject(document, path);

        if (!JsonFields.TryGet(root, "model", out JsonElement model) || model.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidModelException(path, "field 'model' is missing or not an object.");
        }

        string modelType = JsonFields.String(model, "type", path, "model.type") ?? throw JsonFields.Missing(path, "model.type");
        if (modelType != "BPE")
        {
            throw new InvalidModelException(
                path, $"tokenizer model type '{modelType}' (field 'model.type') is not supported; only byte-level BPE is.");
        }

        CheckByteLevelModel(model, path);
        NormalizationForm? normalization = ReadNormalizer(root, path);
        PreTokenizerStep[] preTokenizer = ReadPreTokenizer(root, path);
        CheckDecoder(root, path);

        Dictionary<string, int> vocabulary = ReadVocabulary(model, path);
        List<(string Left, string Right)> merges = ReadMerges(model, path);
        List<AddedToken> added = ReadAddedTokens(root, path);
        bool ignoreMerges = JsonFields.Bool(model, "ignore_merges", path, "model.ignore_merges") ?? false;
        string? unknownToken = JsonFields.String(model, "unk_token", path, "model.unk_token");

        // Ids: the vocabulary's, overridden by the added tokens'.
        int size = 0;
        foreach (int id in vocabulary.Values)
        {
            size = Math.Max(size, id + 1);
        }

        foreach (AddedToken token in added)
        {
            size = Math.Max(size, token.Id + 1);
        }

        if (size > config.VocabSize)
        {
            throw new InvalidModelException(
                path, $"the tokenizer has token ids up to {size - 1}, outside the model's vocabulary of {config.VocabSize} (config.json 'vocab_size').");
        }

        string?[] tokens = new string?[size];
        bool[] special = new bool[size];
        foreach ((string token, int id) in vocabulary)
        {
            if (tokens[id] is not null)
            {
                throw new InvalidModelException(path, $"field 'model.vocab' gives id {id} to both '{tokens[id]}' and '{token}'.");
            }

            tokens[id] = token;
        }

        foreach (AddedToken token in added)
        {
            tokens[token.Id] = token.Content;
            special[token.Id] = token.Special;
        }

        if (unknownToken is not null && !vocabulary.ContainsKey(unknownToken))
        {
            throw new InvalidModelException(path, $"field 'model.unk_token' is '{unknownToken}', which is not in 'model.vocab'.");
        }

        // Byte-level BPE never needs the unknown token: every byte has a symbol in the vocabulary.
        var bpe = new BytePairMerger(vocabulary, merges, path);

        var lookup = new TokenLookup(path, vocabulary, added);
        int? templateBos = ReadTemplateBos(root, path, lookup);
        (bool? addBosSetting, int? configBos, int? configEos) = ReadTokenizerConfig(directory, lookup);

        int? bosId = configBos ?? templateBos ?? config.BosTokenId;
        bool addBos = addBosSetting ?? templateBos is not null;
        if (addBos && bosId is null)
        {
            throw new InvalidModelException(
                path, "the tokenizer is set to add a beginning-of-sequence token, but neither tokenizer_config.json nor config.json names one.");
        }

        var eosIds = new HashSet<int>(config.EosTokenIds);
        if (configEos is int eos)
        {
            eosIds.Add(eos);
        }

        foreach (int id in eosIds.Append(bosId ?? 0))
        {
            if (id >= config.VocabSize)
            {
                throw new InvalidModelException(path, $"special token id {id} is outside the model's vocabulary of {config.VocabSize}.");
            }
        }

        return new TextTokenizer(
            directory, bpe, vocabulary, ignoreMerges, normalization, preTokenizer, added, tokens, special, bosId, addBos, eosIds);
    }

    private static void CheckByteLevelModel(JsonElement model, string path)
    {
        if (JsonFields.Bool(model, "byte_fallback", path, "model.byte_fallback") == true)
        {
            throw new InvalidModelException(
                path, "field 'model.byte_fallback' is true: SentencePiece-style BPE is not supported, only byte-level BPE.");
        }

        foreach (string field in (ReadOnlySpan<string>)["continuing_subword_prefix", "end_of_word_suffix"])
        {
            if (JsonFields.String(model, field, path, $"model.{field}") is { Length: > 0 } value)
            {
                throw new InvalidModelException(
                    path, $"field 'model.{field}' is '{value}': word-piece style BPE is not supported, only byte-level BPE.");
            }
        }

        if (JsonFields.Double(model, "dropout", path, "model.dropout") is double dropout && dropout != 0)
        {
            throw new InvalidModelException(path, $"field 'model.dropout' is {dropout}: BPE dropout is not supported.");
        }
    }

    private static NormalizationForm? ReadNormalizer(JsonElement root, string path)
    {
        if (!JsonFields.TryGet(root, "normalizer", out JsonElement normalizer))
        {
            return null;
        }

        NormalizationForm? form = null;
        ReadNormalizerInto(normalizer, path, "normalizer", ref form);
        return form;
    }

    private static void ReadNormalizerInto(JsonElement normalizer, string path, string field, ref NormalizationForm? form)
    {
        string type = JsonFields.String(normalizer, "type", path, $"{field}.type") ?? throw JsonFields.Missing(path, $"{field}.type");
        switch (type)
        {
            case "NFC":
            case "NFD":
                NormalizationForm next = type == "NFC" ? NormalizationForm.FormC : NormalizationForm.FormD;
                if (form is not null && form != next)
                {
                    throw new InvalidModelException(path, $"field '{field}' chains NFC and NFD normalizers, which is not supported.");
                }

                form = next;
                break;
            case "Sequence":
                if (!JsonFields.TryGet(normalizer, "normalizers", out JsonElement items) || items.ValueKind != JsonValueKind.Array)
                {
                    throw new InvalidModelException(path, $"field '{field}.normalizers' is missing or not a list.");
                }

                int i = 0;
                foreach (JsonElement item in items.EnumerateArray())
                {
                    ReadNormalizerInto(item, path, $"{field}.normalizers[{i++}]", ref form);
                }

                break;
            default:
                throw new InvalidModelException(
                    path,
                    $"normalizer '{type}' (field '{field}.type') is not supported; byte-level BPE tokenizers with no normalizer, NFC or NFD are " +
                    "(SentencePiece-style tokenizers with Prepend/Replace normalizers are not).");
        }
    }

    private static PreTokenizerStep[] ReadPreTokenizer(JsonElement root, string path)
    {
        if (!JsonFields.TryGet(root, "pre_tokenizer", out JsonElement preTokenizer))
        {
            throw new InvalidModelException(
                path, "field 'pre_tokenizer' is missing: the tokenizer is not byte-level BPE (SentencePiece-style BPE is not supported).");
        }

        var steps = new List<(PreTokenizerStep Step, bool IsByteLevel)>();
        ReadPreTokenizerInto(preTokenizer, path, "pre_tokenizer", steps);
        int byteLevel = steps.FindIndex(s => s.IsByteLevel);
        if (byteLevel < 0)
        {
            throw new InvalidModelException(path, "field 'pre_tokenizer' has no ByteLevel step: only byte-level BPE tokenizers are supported.");
        }

        if (byteLevel != steps.Count - 1)
        {
            throw new InvalidModelException(path, "field 'pre_tokenizer' has steps after its ByteLevel step, which is not supported.");
        }

        return [.. steps.Select(s => s.Step)];
    }

    private static void ReadPreTokenizerInto(JsonElement element, string path, string field, List<(PreTokenizerStep, bool)> steps)
    {
        string type = JsonFields.String(element, "type", path, $"{field}.type") ?? throw JsonFields.Missing(path, $"{field}.type");
        switch (type)
        {
            case "Sequence":
            {
                if (!JsonFields.TryGet(element, "pretokenizers", out JsonElement items) || items.ValueKind != JsonValueKind.Array)
                {
                    throw new InvalidModelException(path, $"field '{field}.pretokenizers' is missing or not a list.");
                }

                int i = 0;
                foreach (JsonElement item in items.EnumerateArray())
                {
                    ReadPreTokenizerInto(item, path, $"{field}.pretokenizers[{i++}]", steps);
                }

                break;
            }

            case "Split":
            {
                string behavior = JsonFields.String(element, "behavior", path, $"{field}.behavior") ?? "Isolated";
                if (behavior != "Isolated")
                {
                    throw new InvalidModelException(path, $"field '{field}.behavior' is '{behavior}'; only 'Isolated' is supported.");
                }

                if (JsonFields.Bool(element, "invert", path, $"{field}.invert") == true)
                {
                    throw new InvalidModelException(path, $"field '{field}.invert' is true, which is not supported.");
                }

                if (!JsonFields.TryGet(element, "pattern", out JsonElement pattern))
                {
                    throw JsonFields.Missing(path, $"{field}.pattern");
                }

                string regex = JsonFields.String(pattern, "Regex", path, $"{field}.pattern.Regex") is string r
                    ? r
                    : Regex.Escape(JsonFields.String(pattern, "String", path, $"{field}.pattern.String")
                        ?? throw new InvalidModelException(path, $"field '{field}.pattern' has neither 'Regex' nor 'String'."));
                steps.Add((new PreTokenizerStep(CreateRegex(regex, path, $"{field}.pattern"), AddPrefixSpace: false), false));
                break;
            }

            case "ByteLevel":
            {
                bool addPrefixSpace = JsonFields.Bool(element, "add_prefix_space", path, $"{field}.add_prefix_space") ?? true;
                bool useRegex = JsonFields.Bool(element, "use_regex", path, $"{field}.use_regex") ?? true;
                Regex? split = useRegex ? CreateRegex(Gpt2Pattern, path, field) : null;
                steps.Add((new PreTokenizerStep(split, AddPrefixSpace: addPrefixSpace), true));
                break;
            }

            case "Metaspace":
                throw new InvalidModelException(
                    path, $"pre-tokenizer 'Metaspace' (field '{field}.type') is SentencePiece-style, which is not supported; only byte-level BPE is.");

            default:
                throw new InvalidModelException(
                    path, $"pre-tokenizer '{type}' (field '{field}.type') is not supported; only Split (Isolated) and ByteLevel are.");
        }
    }

    private static Regex CreateRegex(string pattern, string path, string field)
    {
        try
        {
            return new Regex(pattern, RegexOptions.CultureInvariant);
        }
        catch (ArgumentException e)
        {
            throw new InvalidModelException(path, $"field '{field}' holds a regex .NET cannot compile ({e.Message}): {pattern}", e);
        }
    }

    private static void CheckDecoder(JsonElement root, string path)
    {
        string? type = JsonFields.TryGet(root, "decoder", out JsonElement decoder)
            ? JsonFields.String(decoder, "type", path, "decoder.type")
            : null;
        if (type != "ByteLevel")
        {
            throw new InvalidModelException(
                path, $"decoder '{type ?? "none"}' (field 'decoder.type') is not supported; byte-level BPE needs the ByteLevel decoder.");
        }
    }

    private static Dictionary<string, int> ReadVocabulary(JsonElement model, string path)
    {
        if (!JsonFields.TryGet(model, "vocab", out JsonElement vocab) || vocab.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidModelException(path, "field 'model.vocab' is missing or not an object.");
        }

        var result = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (JsonProperty entry in vocab.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
            {
                throw new InvalidModelException(
                    path, $"field 'model.vocab' gives token '{entry.Name}' the id {JsonFields.Describe(entry.Value)}, not a non-negative integer.");
            }

            if (!result.TryAdd(entry.Name, id))
            {
                throw new InvalidModelException(path, $"field 'model.vocab' lists token '{entry.Name}' twice.");
            }
        }

        for (int b = 0; b < 256; b++)
        {
            string symbol = ByteLevelAlphabet.ToChar((byte)b).ToString();
            if (!result.ContainsKey(symbol))
            {
                throw new InvalidModelException(
                    path, $"field 'model.vocab' lacks '{symbol}', the byte-level symbol of byte 0x{b:X2}: a byte-level BPE vocabulary covers all 256 bytes.");
            }
        }

        return result;
    }

    private static List<(string Left, string Right)> ReadMerges(JsonElement model, string path)
    {
        var merges = new List<(string Left, string Right)>();
        if (!JsonFields.TryGet(model, "merges", out JsonElement items))
        {
            return merges;
        }

        if (items.ValueKind != JsonValueKind.Array)
        {
            throw new InvalidModelException(path, "field 'model.merges' is not a list.");
        }

        int i = 0;
        foreach (JsonElement item in items.EnumerateArray())
        {
            string left;
            string right;
            if (item.ValueKind == JsonValueKind.String)
            {
                string text = item.GetString()!;
                int space = text.IndexOf(' ', StringComparison.Ordinal);
                if (space <= 0 || space == text.Length - 1 || text.IndexOf(' ', space + 1) >= 0)
                {
                    throw new InvalidModelException(path, $"field 'model.merges' entry {i} is \"{text}\", not two tokens separated by one space.");
                }

                left = text[..space];
                right = text[(space + 1)..];
            }
            else if (item.ValueKind == JsonValueKind.Array
                && item.GetArrayLength() == 2
                && item[0].ValueKind == JsonValueKind.String
                && item[1].ValueKind == JsonValueKind.String)
            {
                left = item[0].GetString()!;
                right = item[1].GetString()!;
                if (left.Length == 0 || right.Length == 0 || left.Contains(' ', StringComparison.Ordinal) || right.Contains(' ', StringComparison.Ordinal))
                {
                    throw new InvalidModelException(
                        path, $"field 'model.merges' entry {i} is {JsonFields.Describe(item)}: byte-level tokens are non-empty and have no spaces.");
                }
            }
            else
            {
                throw new InvalidModelException(
                    path, $"field 'model.merges' entry {i} is {JsonFields.Describe(item)}, neither \"a b\" nor [\"a\", \"b\"].");
            }

            merges.Add((left, right));
            i++;
        }

        return merges;
    }

    private static List<AddedToken> ReadAddedTokens(JsonElement root, string path)
    {
        var result = new List<AddedToken>();
        if (!JsonFields.TryGet(root, "added_tokens", out JsonElement items))
        {
            return result;
        }

        if (items.ValueKind != JsonValueKind.Array)
        {
            throw new InvalidModelException(path, "field 'added_tokens' is not a list.");
        }

        var ids = new HashSet<int>();
        var contents = new HashSet<string>(StringComparer.Ordinal);
        int i = 0;
        foreach (JsonElement item in items.EnumerateArray())
        {
            string field = $"added_tokens[{i++}]";
            int id = JsonFields.Int(item, "id", path, $"{field}.id") ?? throw JsonFields.Missing(path, $"{field}.id");
            string content = JsonFields.String(item, "content", path, $"{field}.content") ?? throw JsonFields.Missing(path, $"{field}.content");
            if (id < 0 || content.Length == 0)
            {
                throw new InvalidModelException(path, $"field '{field}' has id {id} and content \"{content}\": ids are non-negative and contents non-empty.");
            }

            if (!ids.Add(id) || !contents.Add(content))
            {
                throw new InvalidModelException(path, $"field '{field}' repeats the id {id} or the content \"{content}\" of an earlier added token.");
            }

            result.Add(new AddedToken(
                id,
                content,
                Special: JsonFields.Bool(item, "special", path, $"{field}.special") ?? false,
                SingleWord: JsonFields.Bool(item, "single_word", path, $"{field}.single_word") ?? false,
                LStrip: JsonFields.Bool(item, "lstrip", path, $"{field}.lstrip") ?? false,
                RStrip: JsonFields.Bool(item, "rstrip", path, $"{field}.rstrip") ?? false));
        }

        return result;
    }

    // The id of the special token that a TemplateProcessing post-processor puts before a single sequence.
    private static int? ReadTemplateBos(JsonElement root, string path, TokenLookup lookup)
    {
        if (!JsonFields.TryGet(root, "post_processor", out JsonElement processor))
        {
            return null;
        }

        if (JsonFields.String(processor, "type", path, "post_processor.type") == "Sequence"
            && JsonFields.TryGet(processor, "processors", out JsonElement processors)
            && processors.ValueKind == JsonValueKind.Array)
        {
            foreach (JsonElement item in processors.EnumerateArray())
            {
                if (JsonFields.String(item, "type", path, "post_processor.processors[].type") == "TemplateProcessing")
                {
                    processor = item;
                    break;
                }
            }
        }

        if (JsonFields.String(processor, "type", path, "post_processor.type") != "TemplateProcessing"
            || !JsonFields.TryGet(processor, "single", out JsonElement single)
            || single.ValueKind != JsonValueKind.Array
            || single.GetArrayLength() == 0
            || !JsonFields.TryGet(single[0], "SpecialToken", out JsonElement first))
        {
            return null;
        }

        string name = JsonFields.String(first, "id", path, "post_processor.single[0].SpecialToken.id")
            ?? throw JsonFields.Missing(path, "post_processor.single[0].SpecialToken.id");
        if (JsonFields.TryGet(processor, "special_tokens", out JsonElement specials)
            && JsonFields.TryGet(specials, name, out JsonElement special)
            && JsonFields.TryGet(special, "ids", out JsonElement specialIds)
            && specialIds.ValueKind == JsonValueKind.Array
            && specialIds.GetArrayLength() == 1
            && specialIds[0].TryGetInt32(out int id))
        {
            return id;
        }

        return lookup.Find(name, "post_processor.single[0].SpecialToken.id", path);
    }

    private static (bool? AddBos, int? Bos, int? Eos) ReadTokenizerConfig(string directory, TokenLookup lookup)
    {
        string path = Path.Combine(directory, TokenizerConfigFileName);
        if (!File.Exists(path))
        {
            return (null, null, null);
        }

        using JsonDocument document = JsonFields.ParseFile(path);
        JsonElement root = JsonFields.RootObject(document, path);
        bool? addBos = JsonFields.Bool(root, "add_bos_token", path, "add_bos_token");
        int? bos = ReadConfigToken(root, "bos_token", path, lookup);
        int? eos = ReadConfigToken(root, "eos_token", path, lookup);
        return (addBos, bos, eos);
    }

    // bos_token / eos_token: a string, or an object whose "content" is the string (older files).
    private static int? ReadConfigToken(JsonElement root, string field, string path, TokenLookup lookup)
    {
        if (!JsonFields.TryGet(root, field, out JsonElement value))
        {
            return null;
        }

        string content = value.ValueKind switch
        {
            JsonValueKind.String => value.GetString()!,
            JsonValueKind.Object => JsonFields.String(value, "content", path, $"{field}.content") ?? throw JsonFields.Missing(path, $"{field}.content"),
            _ => throw new InvalidModelException(path, $"field '{field}' is {JsonFields.Describe(value)}, neither a string nor an object with 'content'."),
        };
        return lookup.Find(content, field, path);
    }

    private sealed class TokenLookup(string tokenizerPath, Dictionary<string, int> vocabulary, List<AddedToken> added)
    {
        public int Find(string content, string field, string path)
        {
            foreach (AddedToken token in added)
            {
                if (token.Content == content)
                {
                    return token.Id;
                }
            }

            if (vocabulary.TryGetValue(ByteLevelAlphabet.Encode(content), out int id) || vocabulary.TryGetValue(content, out id))
            {
                return id;
            }

            throw new InvalidModelException(
                path, $"field '{field}' is \"{content}\", which is not a token of {tokenizerPath}.");
        }
    }
}
