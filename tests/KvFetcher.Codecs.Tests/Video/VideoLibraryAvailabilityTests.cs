using KvFetcher.Core;
using KvFetcher.Codecs.Video;
using KvFetcher.Codecs.Video.Native;

namespace KvFetcher.Codecs.Tests.Video;

public class VideoLibraryAvailabilityTests
{
    [Fact]
    public void Candidates_OverridePath_OnlyThatFile()
    {
        string path = Path.Combine(Path.GetTempPath(), "kvf-elsewhere", KvfVideoLibrary.FileName);

        Assert.Equal([path], KvfVideoLibrary.Candidates(path));
        Assert.Contains(KvfVideoLibrary.FileName, KvfVideoLibrary.Candidates(null).Last(), StringComparison.Ordinal);
    }

    [Fact]
    public void Load_BrokenFile_ExplainsWhatWasTriedAndTheRemedy()
    {
        string directory = Directory.CreateTempSubdirectory("kvf-broken-").FullName;
        try
        {
            string broken = Path.Combine(directory, KvfVideoLibrary.FileName);
            File.WriteAllText(broken, "not an ELF file");

            DllNotFoundException ex = Assert.Throws<DllNotFoundException>(() => KvfVideoLibrary.Load(KvfVideoLibrary.Candidates(broken)));

            Assert.Contains(broken, ex.Message, StringComparison.Ordinal);
            Assert.Contains("make -C native/kvfvideo", ex.Message, StringComparison.Ordinal);
            Assert.DoesNotContain('\n', ex.Message); // one line on the console
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void Unavailable_LibraryBuilt_NullForEveryCodec()
    {
        // This checkout builds the shim (tools/setup.sh), so every codec runs here; a process without it gets the
        // reason instead (kvfetch's tests run one with $KVFETCH_VIDEO_LIBRARY pointing nowhere).
        // kvtc needs a per-model transform, not the library: it is unavailable until a test of this process loads one.
        Assert.Null(VideoCodec.Instance.Unavailable);
        Assert.All(KvCodecs.Unavailable(), u =>
        {
            Assert.Equal(CodecId.Kvtc, u.Codec.Id);
            Assert.StartsWith("no kvtc transform is loaded", u.Reason, StringComparison.Ordinal);
        });
    }
}
