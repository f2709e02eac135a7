using KvFetcher.Engine.Model;
using KvFetcher.Engine.Tests.Tokenization;

namespace KvFetcher.Engine.Tests.Model;

public sealed class LoadedModelTests : IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    [Theory]
    [InlineData("LlamaForCausalLM", false)]
    [InlineData("Qwen2ForCausalLM", true)]
    [InlineData("MistralForCausalLM", true)]
    public void Open_CompleteTinyModel_LoadsConfigWeightsAndTokenizer(string architecture, bool sharded)
    {
        ModelFixtures.WriteTinyModel(_temp.Path, architecture, sharded);

        using LoadedModel model = LoadedModel.Open(_temp.Path);
        Assert.Equal(_temp.Path, model.Directory);
        Assert.Equal(ModelFixtures.Layers, model.Config.NumLayers);
        Assert.Equal(sharded ? 2 : 1, model.Weights.Files.Count);
        Assert.Equal([model.Config.VocabSize, ModelFixtures.Hidden], model.Weights.Get("model.embed_tokens.weight").Shape);
        var fixture = new TokenizerFixture();
        Assert.Equal([fixture.Id("Hello"), fixture.Id("Ġworld")], model.Tokenizer.Encode("Hello world"));
        Assert.Contains(fixture.AddedId("<|eot_id|>"), model.Tokenizer.EosIds);
    }

    [Fact]
    public void RequiredTensors_TinyQwen2_MatchesHandWrittenList()
    {
        ModelFixtures.WriteTinyModel(_temp.Path, "Qwen2ForCausalLM");
        using LoadedModel model = LoadedModel.Open(_temp.Path);

        var expected = ModelFixtures.TinyTensors(model.Config.VocabSize, qkvBias: true);
        var actual = LoadedModel.RequiredTensors(model.Config).ToList();
        Assert.Equal(expected.Select(t => t.Name), actual.Select(t => t.Name));
        Assert.Equal(expected.Select(t => t.Shape), actual.Select(t => t.Shape));
    }

    [Theory]
    [InlineData("model.layers.1.mlp.down_proj.weight", false)]
    [InlineData("model.norm.weight", true)]
    [InlineData("lm_head.weight", false)]
    public void Open_MissingTensor_ThrowsNamingTensorAndWeightsFile(string missing, bool sharded)
    {
        ModelFixtures.WriteTinyModel(_temp.Path, sharded: sharded, keep: t => t.Name != missing);

        var e = Assert.Throws<InvalidModelException>(() => LoadedModel.Open(_temp.Path));
        Assert.Contains($"'{missing}' is missing", e.Message, StringComparison.Ordinal);
        Assert.Equal(sharded ? _temp.File(ModelWeights.IndexFileName) : _temp.File("model.safetensors"), e.FilePath);
    }

    [Fact]
    public void Open_Qwen2WithoutQkvBias_ThrowsNamingBias()
    {
        ModelFixtures.WriteTinyModel(_temp.Path, "Qwen2ForCausalLM", keep: t => !t.Name.EndsWith(".bias", StringComparison.Ordinal));

        var e = Assert.Throws<InvalidModelException>(() => LoadedModel.Open(_temp.Path));
        Assert.Contains("'model.layers.0.self_attn.q_proj.bias' is missing", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_TiedEmbeddings_DoesNotNeedLmHead()
    {
        ModelFixtures.WriteTinyModel(_temp.Path, editConfig: c => c["tie_word_embeddings"] = true);

        using LoadedModel model = LoadedModel.Open(_temp.Path);
        Assert.True(model.Config.TieWordEmbeddings);
        Assert.False(model.Weights.TryGet("lm_head.weight", out _));
    }

    [Fact]
    public void Open_MisShapedTensor_ThrowsWithBothShapes()
    {
        // The config says 2 key/value heads, the weights were written for 1.
        ModelFixtures.WriteTinyModel(_temp.Path);
        var config = ModelFixtures.Config();
        config["num_key_value_heads"] = 2;
        ModelFixtures.WriteConfig(_temp.Path, config);

        var e = Assert.Throws<InvalidModelException>(() => LoadedModel.Open(_temp.Path));
        Assert.Contains("'model.layers.0.self_attn.k_proj.weight' has shape [4, 8]", e.Message, StringComparison.Ordinal);
        Assert.Contains("implies [8, 8]", e.Message, StringComparison.Ordinal);
        Assert.Equal(_temp.File("model.safetensors"), e.FilePath);
    }

    [Fact]
    public void Open_MissingDirectory_ThrowsNamingIt()
    {
        string path = _temp.File("nope");
        var e = Assert.Throws<InvalidModelException>(() => LoadedModel.Open(path));
        Assert.Equal(path, e.FilePath);
    }

    [Fact]
    public void Open_MissingConfig_ThrowsNamingIt()
    {
        ModelFixtures.WriteTinyModel(_temp.Path);
        File.Delete(_temp.File("config.json"));

        var e = Assert.Throws<InvalidModelException>(() => LoadedModel.Open(_temp.Path));
        Assert.Equal(_temp.File("config.json"), e.FilePath);
    }

    [Fact]
    public void Open_MissingTokenizer_ThrowsNamingIt()
    {
        ModelFixtures.WriteTinyModel(_temp.Path);
        File.Delete(_temp.File("tokenizer.json"));

        var e = Assert.Throws<InvalidModelException>(() => LoadedModel.Open(_temp.Path));
        Assert.Equal(_temp.File("tokenizer.json"), e.FilePath);
    }
}
