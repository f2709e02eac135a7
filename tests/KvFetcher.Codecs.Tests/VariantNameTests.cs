using KvFetcher.Core;

namespace KvFetcher.Codecs.Tests;

/// <summary>A variant's text (codec name and level), read and written by <see cref="KvCodecs"/> alone.</summary>
public class VariantNameTests
{
    [Theory]
    [InlineData("raw", CodecId.Raw, 0)]
    [InlineData("exact", CodecId.Exact, 0)]
    [InlineData("EXACT0", CodecId.Exact, 0)]
    [InlineData("cachegen", CodecId.CacheGen, 0)]
    [InlineData("cachegen2", CodecId.CacheGen, 2)]
    [InlineData("video", CodecId.Video, 8)]
    [InlineData("video12", CodecId.Video, 12)]
    [InlineData("video4", CodecId.Video, 4)]
    [InlineData("cachegenp", CodecId.CacheGenP, 0)]
    [InlineData("cachegenp6", CodecId.CacheGenP, 6)]
    public void ParseVariant_KnownText_CodecAndLevel(string text, CodecId codec, int level)
    {
        (IKvCodec parsed, int parsedLevel) = KvCodecs.ParseVariant(text);

        Assert.Equal(codec, parsed.Id);
        Assert.Equal(level, parsedLevel);
    }

    [Theory]
    [InlineData("video7")]
    [InlineData("cachegen3")]
    [InlineData("cachegenp7")]
    [InlineData("raw1")]
    [InlineData("zstd")]
    [InlineData("8")]
    [InlineData("video99999999999999999999")]
    [InlineData(" ")]
    public void ParseVariant_UnknownCodecOrLevel_ArgumentException(string text) =>
        Assert.ThrowsAny<ArgumentException>(() => KvCodecs.ParseVariant(text));

    [Fact]
    public void VariantName_EveryCodecAndLevel_ParsesBackToItself()
    {
        foreach (IKvCodec codec in KvCodecs.All)
        {
            foreach (int level in codec.Levels)
            {
                string name = KvCodecs.VariantName(codec.Id, level);
                (IKvCodec parsed, int parsedLevel) = KvCodecs.ParseVariant(name);
                Assert.Equal((codec.Id, level), (parsed.Id, parsedLevel));
                Assert.StartsWith(codec.Id.ToName(), name, StringComparison.Ordinal);
                Assert.Equal(codec.Id.ToName(), codec.Name);
            }
        }

        Assert.Equal("raw", KvCodecs.VariantName(CodecId.Raw, 0));
        Assert.Equal("exact", KvCodecs.VariantName(CodecId.Exact, 0));
        Assert.Equal("video8", KvCodecs.VariantName(CodecId.Video, 8));
        Assert.Equal("cachegen0", KvCodecs.VariantName(CodecId.CacheGen, 0));
        Assert.Equal("cachegenp2", KvCodecs.VariantName(CodecId.CacheGenP, 2));
    }

    [Fact]
    public void CodecIdNames_EveryId_SameAsTheEnumInLowerCase()
    {
        // Object keys on disk spell the codec this way (ObjectKey.ForChunk): the spelling may never change.
        foreach (CodecId id in Enum.GetValues<CodecId>())
        {
            Assert.Equal(id.ToString().ToLowerInvariant(), id.ToName());
            Assert.True(CodecIdExtensions.TryParse(id.ToName().ToUpperInvariant(), out CodecId parsed));
            Assert.Equal(id, parsed);
        }

        Assert.False(CodecIdExtensions.TryParse("video8", out _));
    }
}
