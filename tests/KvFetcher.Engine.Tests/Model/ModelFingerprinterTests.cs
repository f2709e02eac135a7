using KvFetcher.Core.Keys;
using KvFetcher.Engine.Model;

namespace KvFetcher.Engine.Tests.Model;

public sealed class ModelFingerprinterTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvfetch-fp-").FullName;

    public ModelFingerprinterTests()
    {
        foreach (string file in Directory.GetFiles(TestData.TinyModel("tiny-llama3-rope")))
        {
            File.Copy(file, Path.Combine(_dir, Path.GetFileName(file)));
        }
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private ModelFingerprint Fingerprint()
    {
        using LoadedModel model = LoadedModel.Open(_dir);
        return ModelFingerprinter.Get(model);
    }

    [Fact]
    public void Get_TwoLoads_SameFingerprint_CacheFileWritten()
    {
        ModelFingerprint first = Fingerprint();
        Assert.True(File.Exists(Path.Combine(_dir, ModelFingerprinter.CacheFileName)));
        Assert.Equal(first, Fingerprint());

        using LoadedModel model = LoadedModel.Open(_dir);
        Assert.Equal(first, ModelFingerprinter.Compute(model.Config, model.Weights));
    }

    [Fact]
    public void Get_WeightByteChanged_FingerprintChanges()
    {
        ModelFingerprint before = Fingerprint();
        string weights = Path.Combine(_dir, "model.safetensors");
        using (FileStream stream = File.Open(weights, FileMode.Open))
        {
            stream.Seek(-3, SeekOrigin.End);
            int b = stream.ReadByte();
            stream.Seek(-1, SeekOrigin.Current);
            stream.WriteByte((byte)(b ^ 1));
        }

        File.SetLastWriteTimeUtc(weights, DateTime.UtcNow.AddMinutes(1));
        Assert.NotEqual(before, Fingerprint());
    }

    [Fact]
    public void Get_OtherModel_OtherFingerprint()
    {
        using LoadedModel other = LoadedModel.Open(TestData.TinyModel("tiny-mistral"));
        Assert.NotEqual(Fingerprint(), ModelFingerprinter.Compute(other.Config, other.Weights));
    }

    [Fact]
    public void Get_StaleCacheContent_IsNotTrustedAfterFileChange()
    {
        ModelFingerprint real = Fingerprint();
        string cache = Path.Combine(_dir, ModelFingerprinter.CacheFileName);
        string[] lines = File.ReadAllText(cache).Split('\n', 3);
        File.WriteAllText(cache, $"{lines[0]}\n{new string('0', 64)}\n{lines[2]}");
        Assert.NotEqual(real, Fingerprint()); // a cache whose stamp matches is trusted (that is its purpose)...
        File.SetLastWriteTimeUtc(Path.Combine(_dir, "config.json"), DateTime.UtcNow.AddMinutes(2));
        Assert.Equal(real, Fingerprint()); // ...until any file's stamp changes
    }

    [Fact]
    public void Get_TensorZeroedInPlaceWithMtimeRestored_FingerprintChanges()
    {
        ModelFingerprint before = Fingerprint();
        string weights = Path.Combine(_dir, "model.safetensors");
        DateTime mtime = File.GetLastWriteTimeUtc(weights);
        long length = new FileInfo(weights).Length;
        Thread.Sleep(50); // past the file system's timestamp granularity, so the edit's ctime differs from the cached one

        // Zero the last 64 bytes of tensor data (same name, same size), then put the modification time back.
        using (FileStream stream = File.Open(weights, FileMode.Open))
        {
            stream.Seek(length - 64, SeekOrigin.Begin);
            stream.Write(new byte[64]);
        }

        File.SetLastWriteTimeUtc(weights, mtime);
        Assert.Equal(mtime, File.GetLastWriteTimeUtc(weights));
        Assert.Equal(length, new FileInfo(weights).Length);

        using LoadedModel model = LoadedModel.Open(_dir);
        ModelFingerprint after = ModelFingerprinter.Get(model);
        Assert.NotEqual(before, after);
        Assert.Equal(ModelFingerprinter.Compute(model.Config, model.Weights), after);
    }

    [Fact]
    public void Compute_SerialAndParallel_Agree()
    {
        using LoadedModel model = LoadedModel.Open(_dir);
        Assert.Equal(ModelFingerprinter.Compute(model.Config, model.Weights, maxParallelism: 1), ModelFingerprinter.Compute(model.Config, model.Weights));
    }
}
