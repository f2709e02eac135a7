using System.Text;
using System.Text.Json;
using KvFetcher.Engine.Model;
using KvFetcher.Engine.Tests.Model;
using KvFetcher.Engine.Tokenization;

namespace KvFetcher.Engine.Tests.Tokenization;

/// <summary>
/// Long inputs: a run with no split point must not cost quadratic time, slicing it must not change ordinary
/// text (checked against Hugging Face's ids for a long text), and encoding can be cancelled.
/// </summary>
public sealed class LongInputTests : IDisposable
{
    // A hang guard, not a speed check: before the fix 640K characters took ~90 s and 7 MB more than 5 minutes.
    private static readonly TimeSpan s_hangGuard = TimeSpan.FromSeconds(60);

    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Encode_SevenMegabytesWithoutSpaces_FinishesAndRoundTrips()
    {
        TextTokenizer tokenizer = LoadBundled();
        var random = new Random(12);
        string text = string.Create(7_000_000, random, static (span, r) =>
        {
            for (int i = 0; i < span.Length; i++)
            {
                span[i] = (char)('a' + r.Next(26));
            }
        });

        int[] ids = await Task.Run(() => tokenizer.Encode(text, addSpecial: false), TestContext.Current.CancellationToken)
            .WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.InRange(ids.Length, text.Length / 20, text.Length);
        Assert.Equal(text, tokenizer.Decode(ids));
    }

    [Fact]
    public void Encode_PieceLongerThanMaxPieceLength_MergesEachSliceAlone()
    {
        // "aa" merges, so where a slice ends decides the pairing: the slices are encoded as if on their own.
        var fixture = new TokenizerFixture { Merges = [("a", "a"), ("aa", "aa")], AddedTokens = [] };
        TextTokenizer tokenizer = Load(fixture);
        int length = (2 * TextTokenizer.MaxPieceLength) + 7;
        string text = new('a', length);

        int[] expected =
        [
            .. tokenizer.Encode(new string('a', TextTokenizer.MaxPieceLength)),
            .. tokenizer.Encode(new string('a', TextTokenizer.MaxPieceLength)),
            .. tokenizer.Encode(new string('a', 7)),
        ];
        Assert.Equal(expected, tokenizer.Encode(text));
        Assert.Equal(text, tokenizer.Decode(expected));
    }

    [Fact]
    public void Encode_SliceEdgeInsideSurrogatePair_KeepsThePairTogether()
    {
        TextTokenizer tokenizer = Load(new TokenizerFixture { AddedTokens = [] });

        // The emoji's high surrogate sits at the last position of the first slice; cutting there would leave
        // two lone surrogates, which encode as U+FFFD each.
        string text = new string('#', TextTokenizer.MaxPieceLength - 1) + "\U0001F600" + new string('#', 100);

        Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
    }

    [Fact]
    public void Encode_LongOrdinaryText_MatchesHuggingFaceIds()
    {
        // Prose plus a 10,000-letter identifier, 6,000 spaces, 3,000 CJK characters in a row and more: long
        // pieces, but shorter than MaxPieceLength, so slicing must leave every id as Hugging Face gives it.
        using (var gzip = new System.IO.Compression.GZipStream(File.OpenRead(TestData.LongTextReference), System.IO.Compression.CompressionMode.Decompress))
        using (JsonDocument reference = JsonDocument.Parse(gzip))
        {
            AssertMatches(reference);
        }
    }

    private static void AssertMatches(JsonDocument reference)
    {
        string text = reference.RootElement.GetProperty("text").GetString()!;
        int[] expected = [.. reference.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32())];

        int[] actual = LoadBundled().Encode(text, addSpecial: false);

        Assert.Equal(expected.Length, actual.Length);
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void EncodeCancellable_CancelledToken_ThrowsBeforeMerging()
    {
        TextTokenizer tokenizer = LoadBundled();
        using var cancel = new CancellationTokenSource();
        cancel.Cancel();

        Assert.Throws<OperationCanceledException>(() => tokenizer.EncodeCancellable("Hello world", addSpecial: true, cancel.Token));
        Assert.NotEmpty(tokenizer.EncodeCancellable("Hello world", addSpecial: true, CancellationToken.None));
    }

    [Fact]
    public async Task EncodeCancellable_CancelledMidway_StopsWithinHangGuard()
    {
        TextTokenizer tokenizer = LoadBundled();
        string text = new('a', 20_000_000);
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(50));

        Task<int[]> work = Task.Run(() => tokenizer.EncodeCancellable(text, addSpecial: false, cancel.Token), TestContext.Current.CancellationToken);

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => work.WaitAsync(s_hangGuard, TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task Normalize_LongRunOfAlternatingCombiningMarks_FinishesInCanonicalOrder()
    {
        // Classes 230 (acute) and 220 (grave below) alternate: an insertion sort moves each 220 mark past every
        // 230 mark before it, O(k^2) for k marks.
        const int Pairs = 200_000;
        var text = new StringBuilder("a", (2 * Pairs) + 1);
        for (int i = 0; i < Pairs; i++)
        {
            text.Append("\u0301\u0316");
        }

        string normalized = await Task.Run(() => UnicodeNormalizer.Normalize(text.ToString(), NormalizationForm.FormD), TestContext.Current.CancellationToken)
            .WaitAsync(s_hangGuard, TestContext.Current.CancellationToken);

        Assert.Equal("a" + new string('\u0316', Pairs) + new string('\u0301', Pairs), normalized);
    }

    [Theory]
    [InlineData(3)]
    [InlineData(40)]
    public void Normalize_RunOfMixedClasses_IsStableSortByClass(int repeats)
    {
        // Short runs take the insertion sort, long ones the keyed sort: both keep equal classes in input order.
        var text = new StringBuilder("o");
        var expectedLow = new StringBuilder();
        var expectedHigh = new StringBuilder();
        for (int i = 0; i < repeats; i++)
        {
            // \u0308 and \u0301 are both class 230, \u0323 is 220.
            text.Append(i % 2 == 0 ? "\u0308\u0323\u0301" : "\u0301\u0323\u0308");
            expectedLow.Append('\u0323');
            expectedHigh.Append(i % 2 == 0 ? "\u0308\u0301" : "\u0301\u0308");
        }

        Assert.Equal("o" + expectedLow + expectedHigh, UnicodeNormalizer.Normalize(text.ToString(), NormalizationForm.FormD));
    }

    private static TextTokenizer LoadBundled() =>
        TextTokenizer.Load(TestData.BundledModel, ModelConfig.Load(Path.Combine(TestData.BundledModel, "config.json")));

    private TextTokenizer Load(TokenizerFixture fixture)
    {
        fixture.WriteTo(_temp.Path);
        return TextTokenizer.Load(_temp.Path, new ModelConfig { VocabSize = fixture.TotalSize });
    }
}
