using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using KvFetcher.Engine.Model;
using KvFetcher.Engine.Tests.Model;
using KvFetcher.Engine.Tokenization;
using Microsoft.ML.Tokenizers;

namespace KvFetcher.Engine.Tests.Tokenization;

public sealed class TextTokenizerTests : IDisposable
{
    private static readonly string[] s_texts =
    [
        "Hello world",
        "the thing",
        "Hello world, the  thing\n\nis    here!",
        "Numbers 12345 and 3.14159; code: if (x == 1) { return y; }",
        "Ünïcödé: café, naïve, Straße, 東京, Привет мир",
        "emoji 😀👍🏽 and tabs\tand\r\nnewlines",
        "I'm sure they'll say it's 'quoted' and we've DONE'S",
        "   leading and trailing spaces   ",
        "",
    ];

    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void Encode_SimpleWords_AppliesMergesByRank()
    {
        var fixture = new TokenizerFixture();
        TextTokenizer tokenizer = Load(fixture);

        Assert.Equal([fixture.Id("Hello"), fixture.Id("Ġworld")], tokenizer.Encode("Hello world"));

        // "the": t + he (no "t he" merge); " thing": Ġt h ing.
        Assert.Equal(
            [fixture.Id("t"), fixture.Id("he"), fixture.Id("Ġt"), fixture.Id("h"), fixture.Id("ing")],
            tokenizer.Encode("the thing"));
    }

    [Fact]
    public void Encode_MultiByteCharacters_UsesByteSymbols()
    {
        var fixture = new TokenizerFixture();
        TextTokenizer tokenizer = Load(fixture);

        Assert.Equal([fixture.Id("Ã©")], tokenizer.Encode("é"));
        Assert.Equal([fixture.Id("ðŁ"), 0x98, 0x80], tokenizer.Encode("😀"));
    }

    [Theory]
    [InlineData("llama3")]
    [InlineData("gpt2")]
    public void EncodeThenDecode_VariedText_RoundTrips(string preTokenizer)
    {
        TextTokenizer tokenizer = Load(new TokenizerFixture { PreTokenizer = preTokenizer });
        foreach (string text in s_texts)
        {
            Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
        }
    }

    [Theory]
    [InlineData("llama3")]
    [InlineData("gpt2")]
    public void Encode_WithoutIgnoreMerges_MatchesMlTokenizersRegexPipeline(string preTokenizer)
    {
        // The verified reference setup: BpeTokenizer with a RegexPreTokenizer over the file's own split regex.
        var fixture = new TokenizerFixture { PreTokenizer = preTokenizer, AddedTokens = [] };
        TextTokenizer tokenizer = Load(fixture);
        string pattern = preTokenizer == "gpt2"
            ? @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
            : TokenizerFixture.Llama3Pattern;
        BpeTokenizer reference = BpeTokenizer.Create(new BpeOptions(fixture.Vocabulary())
        {
            Merges = fixture.Merges.Select(m => $"{m.Left} {m.Right}"),
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(new Regex(pattern), null),
        });

        foreach (string text in s_texts)
        {
            Assert.Equal(reference.EncodeToIds(text), tokenizer.Encode(text));
        }
    }

    [Fact]
    public void Encode_IgnoreMerges_EmitsWholeVocabularyWords()
    {
        var fixture = new TokenizerFixture { IgnoreMerges = true };
        Assert.Equal([fixture.Id("Ġxyz")], Load(fixture).Encode(" xyz"));

        var merging = new TokenizerFixture { IgnoreMerges = false };
        Assert.Equal([(int)' ', 'x', 'y', 'z'], Load(merging).Encode(" xyz"));
    }

    [Fact]
    public void Encode_SpecialTokensInText_BecomeTheirIds()
    {
        var fixture = new TokenizerFixture();
        TextTokenizer tokenizer = Load(fixture);
        int bot = fixture.AddedId("<|begin_of_text|>");
        int eot = fixture.AddedId("<|eot_id|>");

        Assert.Equal([bot, fixture.Id("Hello"), eot], tokenizer.Encode("<|begin_of_text|>Hello<|eot_id|>"));
        Assert.Equal([eot, eot], tokenizer.Encode("<|eot_id|><|eot_id|>"));
        Assert.Equal(eot, tokenizer.GetAddedTokenId("<|eot_id|>"));
        Assert.True(tokenizer.IsSpecial(eot));
        Assert.False(tokenizer.IsSpecial(fixture.Id("Hello")));
    }

    [Fact]
    public void Encode_LStripAddedToken_SwallowsPrecedingSpace()
    {
        var fixture = new TokenizerFixture();
        TextTokenizer tokenizer = Load(fixture);

        Assert.Equal(['a', fixture.AddedId("<mask>")], tokenizer.Encode("a <mask>"));
    }

    [Fact]
    public void Encode_NfcNormalizer_ComposesDecomposedText()
    {
        var fixture = new TokenizerFixture { Nfc = true };
        TextTokenizer tokenizer = Load(fixture);

        Assert.Equal([fixture.Id("Ã©")], tokenizer.Encode("e\u0301"));
        Assert.Equal("é", tokenizer.Decode(tokenizer.Encode("e\u0301")));

        // Without the normalizer the combining mark stays a separate piece.
        Assert.Equal(['e', 0xCC, 0x81], Load(new TokenizerFixture()).Encode("e\u0301"));
    }

    [Fact]
    public void Encode_MergesAsArrays_SameAsMergeStrings()
    {
        TextTokenizer strings = Load(new TokenizerFixture());
        TextTokenizer arrays = Load(new TokenizerFixture { MergesAsArrays = true });
        foreach (string text in s_texts)
        {
            Assert.Equal(strings.Encode(text), arrays.Encode(text));
        }
    }

    [Fact]
    public void Encode_AddBosFromTokenizerConfig_PrependsBosOnlyWithAddSpecial()
    {
        var fixture = new TokenizerFixture();
        File.WriteAllText(
            _temp.File("tokenizer_config.json"),
            """{"add_bos_token": true, "bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>", "special": true}}""");
        TextTokenizer tokenizer = Load(fixture, new ModelConfig { VocabSize = fixture.TotalSize, EosTokenIds = [fixture.Id("Hello")] });
        int bos = fixture.AddedId("<|begin_of_text|>");

        Assert.True(tokenizer.AddBos);
        Assert.Equal(bos, tokenizer.BosId);
        Assert.Equal([bos, fixture.Id("Hello")], tokenizer.Encode("Hello"));
        Assert.Equal([fixture.Id("Hello")], tokenizer.Encode("Hello", addSpecial: false));
        Assert.Equal(new HashSet<int> { fixture.Id("Hello"), fixture.AddedId("<|eot_id|>") }, tokenizer.EosIds);
    }

    [Fact]
    public void Encode_TemplateProcessingBos_PrependsBos()
    {
        var fixture = new TokenizerFixture { TemplateBos = "<|begin_of_text|>" };
        TextTokenizer tokenizer = Load(fixture);

        Assert.True(tokenizer.AddBos);
        Assert.Equal([fixture.AddedId("<|begin_of_text|>"), fixture.Id("Hello")], tokenizer.Encode("Hello"));
    }

    [Fact]
    public void Encode_NoBosSettings_AddsNothingAndTakesBosIdFromConfig()
    {
        var fixture = new TokenizerFixture();
        TextTokenizer tokenizer = Load(fixture, new ModelConfig { VocabSize = fixture.TotalSize, BosTokenId = 5, EosTokenIds = [7] });

        Assert.False(tokenizer.AddBos);
        Assert.Equal(5, tokenizer.BosId);
        Assert.Equal(new HashSet<int> { 7 }, tokenizer.EosIds);
        Assert.Equal([fixture.Id("Hello")], tokenizer.Encode("Hello"));
    }

    [Fact]
    public void Decode_SkipSpecial_DropsSpecialButKeepsOtherAddedTokens()
    {
        var fixture = new TokenizerFixture();
        TextTokenizer tokenizer = Load(fixture);
        int[] ids = tokenizer.Encode("<|begin_of_text|>Hello world<mask><|eot_id|>");

        Assert.Equal("<|begin_of_text|>Hello world<mask><|eot_id|>", tokenizer.Decode(ids));
        Assert.Equal("Hello world<mask>", tokenizer.Decode(ids, skipSpecial: true));
    }

    [Fact]
    public void Decode_InvalidUtf8AndUnknownIds_ReplacesAndSkips()
    {
        var fixture = new TokenizerFixture();
        TextTokenizer tokenizer = Load(fixture);

        Assert.Equal("a\uFFFDb", tokenizer.Decode(['a', 0xF0, 'b']));
        Assert.Equal("ab", tokenizer.Decode(['a', fixture.TotalSize + 2, -1, 'b']));
        Assert.Equal(fixture.TotalSize, tokenizer.VocabSize);
    }

    [Fact]
    public void StreamDecoder_EmojiSplitAcrossTokens_HoldsBackIncompleteBytes()
    {
        var fixture = new TokenizerFixture();
        TextTokenizer tokenizer = Load(fixture);
        TokenStreamDecoder decoder = tokenizer.CreateStreamDecoder();

        Assert.Equal("a", decoder.Append('a'));
        Assert.Equal("", decoder.Append(fixture.Id("ðŁ")));
        Assert.Equal("", decoder.Append(0x98));
        Assert.Equal("😀", decoder.Append(0x80));
        Assert.Equal(" world", decoder.Append(fixture.Id("Ġworld")));
        Assert.Equal("", decoder.Append(fixture.Id("ðŁ")));
        Assert.Equal("\uFFFD", decoder.Flush());
    }

    [Fact]
    public void StreamDecoder_AllTexts_ConcatenationEqualsDecode()
    {
        TextTokenizer tokenizer = Load(new TokenizerFixture());
        foreach (string text in s_texts)
        {
            int[] ids = tokenizer.Encode("<|eot_id|>" + text);
            TokenStreamDecoder decoder = tokenizer.CreateStreamDecoder(skipSpecial: true);
            var builder = new StringBuilder();
            foreach (int id in ids)
            {
                builder.Append(decoder.Append(id));
            }

            builder.Append(decoder.Flush());
            Assert.Equal(tokenizer.Decode(ids, skipSpecial: true), builder.ToString());
            Assert.Equal(text, builder.ToString());
        }
    }

    [Theory]
    [InlineData("WordPiece")]
    [InlineData("Unigram")]
    [InlineData("WordLevel")]
    public void Load_NonBpeModel_ThrowsNamingType(string type)
    {
        var e = Assert.Throws<InvalidModelException>(() => Load(new TokenizerFixture(), edit: json => json["model"]!["type"] = type));
        Assert.Contains($"'{type}'", e.Message, StringComparison.Ordinal);
        Assert.Equal(_temp.File("tokenizer.json"), e.FilePath);
    }

    [Fact]
    public void Load_SentencePieceStyleBpe_Throws()
    {
        var e = Assert.Throws<InvalidModelException>(() => Load(new TokenizerFixture(), edit: json =>
        {
            json["pre_tokenizer"] = new JsonObject { ["type"] = "Metaspace", ["replacement"] = "▁", ["prepend_scheme"] = "first" };
        }));
        Assert.Contains("Metaspace", e.Message, StringComparison.Ordinal);

        e = Assert.Throws<InvalidModelException>(() => Load(new TokenizerFixture(), edit: json => json["model"]!["byte_fallback"] = true));
        Assert.Contains("byte_fallback", e.Message, StringComparison.Ordinal);

        e = Assert.Throws<InvalidModelException>(() => Load(new TokenizerFixture(), edit: json => json["pre_tokenizer"] = null));
        Assert.Contains("'pre_tokenizer'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_MissingTokenizerJson_ThrowsNamingFile()
    {
        var e = Assert.Throws<InvalidModelException>(() => TextTokenizer.Load(_temp.Path, new ModelConfig { VocabSize = 300 }));
        Assert.Equal(_temp.File("tokenizer.json"), e.FilePath);
    }

    [Fact]
    public void Load_IdsBeyondModelVocabulary_Throws()
    {
        var fixture = new TokenizerFixture();
        fixture.WriteTo(_temp.Path);

        var e = Assert.Throws<InvalidModelException>(() => TextTokenizer.Load(_temp.Path, new ModelConfig { VocabSize = 100 }));
        Assert.Contains("vocabulary of 100", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("""{"bos_token": "<nope>", "add_bos_token": true}""", "'bos_token'")]
    [InlineData("""{"eos_token": 12}""", "'eos_token'")]
    [InlineData("""{"add_bos_token": "yes"}""", "'add_bos_token'")]
    public void Load_BadTokenizerConfig_ThrowsNamingField(string content, string expected)
    {
        File.WriteAllText(_temp.File("tokenizer_config.json"), content);

        var e = Assert.Throws<InvalidModelException>(() => Load(new TokenizerFixture()));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        Assert.Equal(_temp.File("tokenizer_config.json"), e.FilePath);
    }

    [Theory]
    [InlineData("vocab_missing_byte")]
    [InlineData("merge_not_in_vocab")]
    [InlineData("merge_malformed")]
    [InlineData("decoder")]
    [InlineData("bad_regex")]
    [InlineData("split_behavior")]
    [InlineData("normalizer")]
    public void Load_InconsistentTokenizerJson_Throws(string problem)
    {
        Action<JsonObject> edit = problem switch
        {
            "vocab_missing_byte" => json => json["model"]!["vocab"]!.AsObject().Remove(TokenizerFixture.Symbol(0x41)),
            "merge_not_in_vocab" => json => json["model"]!["merges"]!.AsArray().Add("q z"),
            "merge_malformed" => json => json["model"]!["merges"]!.AsArray().Add("qz"),
            "decoder" => json => json["decoder"] = new JsonObject { ["type"] = "Metaspace" },
            "bad_regex" => json => json["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"]!["Regex"] = "(unclosed",
            "split_behavior" => json => json["pre_tokenizer"]!["pretokenizers"]![0]!["behavior"] = "Removed",
            _ => json => json["normalizer"] = new JsonObject { ["type"] = "Lowercase" },
        };

        var e = Assert.Throws<InvalidModelException>(() => Load(new TokenizerFixture(), edit: edit));
        Assert.Equal(_temp.File("tokenizer.json"), e.FilePath);
    }

    private TextTokenizer Load(TokenizerFixture fixture, ModelConfig? config = null, Action<JsonObject>? edit = null)
    {
        fixture.WriteTo(_temp.Path, edit);
        return TextTokenizer.Load(_temp.Path, config ?? new ModelConfig { VocabSize = fixture.TotalSize });
    }
}
