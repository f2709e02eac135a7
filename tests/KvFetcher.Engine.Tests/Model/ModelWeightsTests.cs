using System.Text.Json.Nodes;
using KvFetcher.Core;
using KvFetcher.Engine.Model;

namespace KvFetcher.Engine.Tests.Model;

public sealed class ModelWeightsTests : IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void Open_ShardedIndex_OpensEachShardOnceAndFindsEveryTensor()
    {
        WriteShards(("a", 1f, "s1.safetensors"), ("b", 2f, "s2.safetensors"), ("c", 3f, "s1.safetensors"));

        using ModelWeights weights = ModelWeights.Open(_temp.Path);
        Assert.Equal(["a", "b", "c"], weights.Names);
        Assert.Equal([_temp.File("s1.safetensors"), _temp.File("s2.safetensors")], weights.Files);
        Assert.Equal([2f], weights.Get("b").ToSingleArray());
        Assert.Equal([3f], weights.Get("c").ToSingleArray());
        Assert.Equal(_temp.File("s1.safetensors"), weights.FileOf("c"));
        Assert.True(weights.TryGet("a", out WeightTensor? a));
        Assert.Equal([1f], a.ToSingleArray());
    }

    [Fact]
    public void Open_ShardFileMissing_ThrowsNamingShard()
    {
        WriteShards(("a", 1f, "s1.safetensors"), ("b", 2f, "s2.safetensors"));
        File.Delete(_temp.File("s2.safetensors"));

        var e = Assert.Throws<InvalidModelException>(() => ModelWeights.Open(_temp.Path));
        Assert.Equal(_temp.File("s2.safetensors"), e.FilePath);
        Assert.Contains("'b'", e.Message, StringComparison.Ordinal);
        Assert.Contains("does not exist", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_IndexListsTensorAbsentFromItsShard_ThrowsNamingShardAndTensor()
    {
        WriteShards(("a", 1f, "s1.safetensors"), ("b", 2f, "s2.safetensors"));
        var index = JsonNode.Parse(File.ReadAllText(_temp.File(ModelWeights.IndexFileName)))!.AsObject();
        index["weight_map"]!["ghost"] = "s1.safetensors";
        File.WriteAllText(_temp.File(ModelWeights.IndexFileName), index.ToJsonString());

        var e = Assert.Throws<InvalidModelException>(() => ModelWeights.Open(_temp.Path));
        Assert.Equal(_temp.File("s1.safetensors"), e.FilePath);
        Assert.Contains("'ghost'", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("../outside.safetensors")]
    [InlineData("/etc/passwd")]
    [InlineData("")]
    public void Open_IndexNamesFileOutsideDirectory_Throws(string shard)
    {
        File.WriteAllText(
            _temp.File(ModelWeights.IndexFileName),
            new JsonObject { ["weight_map"] = new JsonObject { ["a"] = shard } }.ToJsonString());

        var e = Assert.Throws<InvalidModelException>(() => ModelWeights.Open(_temp.Path));
        Assert.Contains("not a file name inside the model directory", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_IndexWithoutWeightMap_Throws()
    {
        File.WriteAllText(_temp.File(ModelWeights.IndexFileName), """{"metadata":{}}""");

        var e = Assert.Throws<InvalidModelException>(() => ModelWeights.Open(_temp.Path));
        Assert.Contains("'weight_map'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_SingleModelSafetensors_LoadsIt()
    {
        SafeTensorsWriter.Write(_temp.File("model.safetensors"), [("w", DType.Float32, [1], ModelFixtures.F32Bytes(5))]);
        SafeTensorsWriter.Write(_temp.File("other.safetensors"), [("v", DType.Float32, [1], ModelFixtures.F32Bytes(6))]);

        using ModelWeights weights = ModelWeights.Open(_temp.Path);
        Assert.Equal([_temp.File("model.safetensors")], weights.Files);
        Assert.Equal(["w"], weights.Names);
    }

    [Fact]
    public void Open_OnlyOneOtherSafetensorsFile_LoadsIt()
    {
        SafeTensorsWriter.Write(_temp.File("consolidated.safetensors"), [("w", DType.Float32, [1], ModelFixtures.F32Bytes(5))]);

        using ModelWeights weights = ModelWeights.Open(_temp.Path);
        Assert.Equal([5f], weights.Get("w").ToSingleArray());
    }

    [Fact]
    public void Open_NoWeights_ThrowsNamingDirectory()
    {
        var e = Assert.Throws<InvalidModelException>(() => ModelWeights.Open(_temp.Path));
        Assert.Equal(_temp.Path, e.FilePath);
        Assert.Contains("no weights", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_TwoSafetensorsWithoutIndex_Throws()
    {
        SafeTensorsWriter.Write(_temp.File("a.safetensors"), [("w", DType.Float32, [1], ModelFixtures.F32Bytes(5))]);
        SafeTensorsWriter.Write(_temp.File("b.safetensors"), [("v", DType.Float32, [1], ModelFixtures.F32Bytes(6))]);

        var e = Assert.Throws<InvalidModelException>(() => ModelWeights.Open(_temp.Path));
        Assert.Contains("a.safetensors, b.safetensors", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Get_MissingTensor_ThrowsNamingTensor()
    {
        SafeTensorsWriter.Write(_temp.File("model.safetensors"), [("w", DType.Float32, [1], ModelFixtures.F32Bytes(5))]);
        using ModelWeights weights = ModelWeights.Open(_temp.Path);

        var e = Assert.Throws<InvalidModelException>(() => weights.Get("lm_head.weight"));
        Assert.Equal(_temp.File("model.safetensors"), e.FilePath);
        Assert.Contains("'lm_head.weight'", e.Message, StringComparison.Ordinal);
        Assert.False(weights.TryGet("lm_head.weight", out _));
        Assert.Null(weights.FileOf("lm_head.weight"));
    }

    private void WriteShards(params (string Name, float Value, string Shard)[] tensors)
    {
        foreach (var shard in tensors.GroupBy(t => t.Shard))
        {
            SafeTensorsWriter.Write(
                _temp.File(shard.Key),
                shard.Select(t => (t.Name, DType.Float32, new[] { 1 }, (ReadOnlyMemory<byte>)ModelFixtures.F32Bytes(t.Value))));
        }

        var map = new JsonObject();
        foreach (var t in tensors)
        {
            map[t.Name] = t.Shard;
        }

        File.WriteAllText(_temp.File(ModelWeights.IndexFileName), new JsonObject { ["weight_map"] = map }.ToJsonString());
    }
}
