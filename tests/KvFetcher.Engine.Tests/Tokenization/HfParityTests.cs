using KvFetcher.Engine.Model;
using KvFetcher.Engine.Tests.Model;
using KvFetcher.Engine.Tokenization;

namespace KvFetcher.Engine.Tests.Tokenization;

/// <summary>Encodes and decodes like Hugging Face tokenizers, id for id, on the recorded reference texts.</summary>
public sealed class HfParityTests : IDisposable
{
    private readonly TempDirectory _temp = new();

    public static TheoryData<string> Variants => ["llama3", "llama3_ignore", "gpt2", "nfc", "template"];

    public void Dispose() => _temp.Dispose();

    [Theory]
    [MemberData(nameof(Variants))]
    public void EncodeAndDecode_ReferenceTexts_MatchHuggingFaceTokenizers(string variant)
    {
        TokenizerFixture fixture = variant switch
        {
            "llama3" => new TokenizerFixture(),
            "llama3_ignore" => new TokenizerFixture { IgnoreMerges = true },
            "gpt2" => new TokenizerFixture { PreTokenizer = "gpt2" },
            "nfc" => new TokenizerFixture { Nfc = true },
            _ => new TokenizerFixture { TemplateBos = "<|begin_of_text|>" },
        };
        fixture.WriteTo(_temp.Path);
        TextTokenizer tokenizer = TextTokenizer.Load(_temp.Path, new ModelConfig { VocabSize = fixture.TotalSize });

        var expected = HfTokenizerReference.Encodings[variant];
        Assert.Equal(HfTokenizerReference.Texts.Length, expected.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            string text = HfTokenizerReference.Texts[i];
            (int[] ids, int[] withSpecial, string decoded, string decodedSkip) = expected[i];
            Assert.True(ids.SequenceEqual(tokenizer.Encode(text, addSpecial: false)), $"text {i}: {text}");
            Assert.True(withSpecial.SequenceEqual(tokenizer.Encode(text)), $"text {i} with special tokens: {text}");
            Assert.Equal(decoded, tokenizer.Decode(ids));
            Assert.Equal(decodedSkip, tokenizer.Decode(ids, skipSpecial: true));
        }
    }
}
