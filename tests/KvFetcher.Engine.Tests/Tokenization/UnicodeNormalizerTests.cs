using System.Text;
using KvFetcher.Engine.Tokenization;

namespace KvFetcher.Engine.Tests.Tokenization;

public sealed class UnicodeNormalizerTests
{
    [Theory]
    [InlineData("plain ASCII text", "plain ASCII text")]
    [InlineData("cafe\u0301", "caf\u00E9")]
    [InlineData("caf\u00E9", "caf\u00E9")]
    [InlineData("a\u0323\u0302", "\u1EAD")] // dot below (class 220) then circumflex (230): composes fully
    [InlineData("a\u0302\u0323", "\u1EAD")] // reordered first
    [InlineData("\u212B", "\u00C5")] // ANGSTROM SIGN is a singleton decomposition
    [InlineData("\u2126", "\u03A9")] // OHM SIGN
    [InlineData("\u0958", "\u0915\u093C")] // composition exclusion stays decomposed
    [InlineData("\u1100\u1161\u11A8", "\uAC01")] // Hangul L V T
    [InlineData("\uAC00\u11A8", "\uAC01")] // Hangul LV + T
    [InlineData("\u0301a", "\u0301a")] // leading combining mark has nothing to join
    [InlineData("e\u0301\u0301", "\u00E9\u0301")] // the second acute is blocked
    [InlineData("\U0001D15E", "\U0001D157\U0001D165")] // musical symbol: excluded, decomposes
    public void Normalize_FormC_MatchesUnicodeExamples(string input, string expected)
    {
        Assert.Equal(expected, UnicodeNormalizer.Normalize(input, NormalizationForm.FormC));
    }

    [Theory]
    [InlineData("caf\u00E9", "cafe\u0301")]
    [InlineData("\u1EAD", "a\u0323\u0302")]
    [InlineData("\uAC01", "\u1100\u1161\u11A8")]
    [InlineData("\u212B", "A\u030A")]
    public void Normalize_FormD_DecomposesAndOrders(string input, string expected)
    {
        Assert.Equal(expected, UnicodeNormalizer.Normalize(input, NormalizationForm.FormD));
    }

    [Fact]
    public void Normalize_FormCOfFormD_RoundTripsComposedText()
    {
        string text = "Ünïcödé: café, naïve, Straße, 東京, Привет мир, Ελληνικά, Tiếng Việt, 한국어";
        string decomposed = UnicodeNormalizer.Normalize(text, NormalizationForm.FormD);

        Assert.NotEqual(text, decomposed);
        Assert.Equal(text, UnicodeNormalizer.Normalize(decomposed, NormalizationForm.FormC));
    }
}
