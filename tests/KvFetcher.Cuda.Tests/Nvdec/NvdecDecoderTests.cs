using System.Runtime.InteropServices;
using KvFetcher.Codecs.Video;
using KvFetcher.Core;
using KvFetcher.Cuda.Nvdec;

namespace KvFetcher.Cuda.Tests.Nvdec;

/// <summary>
/// NVDEC against the CPU decoder (libavcodec) on the video codec's real-KV streams. Skipped (not passed) where there is
/// no NVIDIA GPU with NVDEC, as in CI; the device runner (bench/KvFetcher.NvdecBench run) repeats the bit-exactness
/// check on the GPU machine, which has no dotnet.
/// </summary>
public class NvdecDecoderTests
{
    [Theory]
    [MemberData(nameof(NvdecTestStreams.Settings), MemberType = typeof(NvdecTestStreams))]
    public void Decode_RealKvStreams_MatchTheCpuDecoderBitForBit(VideoLayoutKind layout, int level)
    {
        SkipWithoutNvdec();
        using var decoder = new NvdecDecoder(NvdecTestStreams.Device);
        foreach (NvdecTestStream s in NvdecTestStreams.Get(layout, level))
        {
            var planes = new byte[s.Format.OutputBytes];
            decoder.Decode(s.Data, s.Format, planes);
            AssertSamePlanes(s, s.CpuPlanes, planes);
        }

        Assert.Equal(2L * NvdecTestStreams.Get(layout, level)[0].Format.Frames, decoder.FramesDecoded);
    }

    [Theory]
    [MemberData(nameof(NvdecTestStreams.Settings), MemberType = typeof(NvdecTestStreams))]
    public void DecodeToDevice_RealKvStreams_HoldTheCpuSamplesInTheHighBits(VideoLayoutKind layout, int level)
    {
        SkipWithoutNvdec();
        using var decoder = new NvdecDecoder(NvdecTestStreams.Device);
        NvdecTestStream[] streams = NvdecTestStreams.Get(layout, level);
        long bytes = streams[0].Format.OutputBytes;
        using DeviceBuffer buffer = NvdecTestStreams.Device.Context.Allocate(2 * bytes);
        decoder.DecodeToDevice(streams[0].Data, streams[0].Format, buffer, 0);
        decoder.DecodeToDevice(streams[1].Data, streams[1].Format, buffer, bytes);
        var copied = new byte[2 * bytes];
        buffer.CopyTo(copied);
        for (int i = 0; i < 2; i++)
        {
            NvdecTestStream s = streams[i];
            Span<byte> planes = copied.AsSpan((int)(i * bytes), (int)bytes);
            if (s.Format.Depth > 8)
            {
                Span<ushort> samples = MemoryMarshal.Cast<byte, ushort>(planes);
                int shift = 16 - s.Format.Depth;
                for (int j = 0; j < samples.Length; j++)
                {
                    Assert.Equal(0, samples[j] & ((1 << shift) - 1));
                    samples[j] >>= shift;
                }
            }

            AssertSamePlanes(s, s.CpuPlanes, planes.ToArray());
        }
    }

    [Fact]
    public async Task Pool_EveryStreamAtOnce_EachMatchesTheCpuDecoder()
    {
        SkipWithoutNvdec();
        NvdecTestStream[] streams = [.. NvdecTestStreams.All.SelectMany(setting => NvdecTestStreams.Get(setting.Layout, setting.Level))];
        using var pool = new NvdecPool(NvdecTestStreams.Device, 4);
        byte[][] outputs = [.. streams.Select(s => new byte[s.Format.OutputBytes])];
        await Task.WhenAll(streams.Select((s, i) => pool.DecodeAsync(s.Data, s.Format, outputs[i], TestContext.Current.CancellationToken)));
        for (int i = 0; i < streams.Length; i++)
        {
            AssertSamePlanes(streams[i], streams[i].CpuPlanes, outputs[i]);
        }

        Assert.Equal(streams.Sum(s => (long)s.Format.Frames), pool.FramesDecoded);
    }

    [Fact]
    public async Task Pool_OneCorruptStream_FaultsOnlyItsOwnTask()
    {
        SkipWithoutNvdec();
        NvdecTestStream good = NvdecTestStreams.Get(VideoLayoutKind.TokenTiles, 8)[0];
        using var pool = new NvdecPool(NvdecTestStreams.Device, 2);
        var planes = new byte[good.Format.OutputBytes];
        Task bad = pool.DecodeAsync(good.Data.AsMemory(0, good.Data.Length / 2), good.Format, new byte[good.Format.OutputBytes], TestContext.Current.CancellationToken);
        Task fine = pool.DecodeAsync(good.Data, good.Format, planes, TestContext.Current.CancellationToken);
        await Assert.ThrowsAsync<InvalidKvDataException>(() => bad);
        await fine;
        AssertSamePlanes(good, good.CpuPlanes, planes);
    }

    [Fact]
    public void Decode_TruncatedStream_ThrowsInvalidKvData()
    {
        SkipWithoutNvdec();
        NvdecTestStream s = NvdecTestStreams.Get(VideoLayoutKind.ChannelRows, 10)[1];
        using var decoder = new NvdecDecoder(NvdecTestStreams.Device);
        Assert.Throws<InvalidKvDataException>(() => decoder.Decode(s.Data.AsSpan(0, s.Data.Length / 2), s.Format, new byte[s.Format.OutputBytes]));

        // The session still decodes the next stream.
        var planes = new byte[s.Format.OutputBytes];
        decoder.Decode(s.Data, s.Format, planes);
        AssertSamePlanes(s, s.CpuPlanes, planes);
    }

    [Fact]
    public void Decode_DeclaredSizeDiffersFromTheStream_ThrowsNamingBoth()
    {
        SkipWithoutNvdec();
        NvdecTestStream s = NvdecTestStreams.Get(VideoLayoutKind.ChannelRows, 8)[0];
        NvdecStreamFormat wrong = s.Format with { Width = s.Format.Width + 8 };
        using var decoder = new NvdecDecoder(NvdecTestStreams.Device);
        InvalidKvDataException e = Assert.Throws<InvalidKvDataException>(() => decoder.Decode(s.Data, wrong, new byte[wrong.OutputBytes]));
        Assert.Contains($"{s.Format.Width}x{s.Format.Height}", e.Message, StringComparison.Ordinal);
        Assert.Contains($"{wrong.Width}x{wrong.Height}", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Decode_DeclaredDepthDiffersFromTheStream_Throws()
    {
        SkipWithoutNvdec();
        NvdecTestStream s = NvdecTestStreams.Get(VideoLayoutKind.TokenTiles, 12)[0];
        NvdecStreamFormat wrong = s.Format with { Depth = 10 };
        using var decoder = new NvdecDecoder(NvdecTestStreams.Device);
        InvalidKvDataException e = Assert.Throws<InvalidKvDataException>(() => decoder.Decode(s.Data, wrong, new byte[wrong.OutputBytes]));
        Assert.Contains("12-bit", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Decode_MoreFramesDeclared_ThrowsCountingThem()
    {
        SkipWithoutNvdec();
        NvdecTestStream s = NvdecTestStreams.Get(VideoLayoutKind.TokenTiles, 4)[1];
        NvdecStreamFormat wrong = s.Format with { Frames = s.Format.Frames + 1 };
        using var decoder = new NvdecDecoder(NvdecTestStreams.Device);
        InvalidKvDataException e = Assert.Throws<InvalidKvDataException>(() => decoder.Decode(s.Data, wrong, new byte[wrong.OutputBytes]));
        Assert.Contains($"holds {s.Format.Frames} frames", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Decode_GeometryChanges_CreatesOneHardwareDecoderPerChange()
    {
        SkipWithoutNvdec();
        NvdecTestStream tiles = NvdecTestStreams.Get(VideoLayoutKind.TokenTiles, 8)[0];
        NvdecTestStream rows = NvdecTestStreams.Get(VideoLayoutKind.ChannelRows, 8)[0];
        using var decoder = new NvdecDecoder(NvdecTestStreams.Device);
        foreach (NvdecTestStream s in new[] { tiles, tiles, rows, rows, tiles })
        {
            var planes = new byte[s.Format.OutputBytes];
            decoder.Decode(s.Data, s.Format, planes);
            AssertSamePlanes(s, s.CpuPlanes, planes);
        }

        Assert.Equal(3, decoder.DecodersCreated);
    }

    [Fact]
    public void Decode_PlaneBufferOfTheWrongSize_ThrowsArgument()
    {
        SkipWithoutNvdec();
        NvdecTestStream s = NvdecTestStreams.Get(VideoLayoutKind.TokenTiles, 8)[0];
        using var decoder = new NvdecDecoder(NvdecTestStreams.Device);
        Assert.Throws<ArgumentException>(() => decoder.Decode(s.Data, s.Format, new byte[s.Format.OutputBytes - 1]));
    }

    [Fact]
    public void IsSupported_WithoutDriver_ExplainsWhatIsMissing()
    {
        Assert.SkipWhen(NvdecTestStreams.Available, "NVDEC is present.");
        Assert.False(NvdecDevice.IsSupported(out string reason));
        Assert.False(string.IsNullOrWhiteSpace(reason));
    }

    [Fact]
    public void Open_WithoutDriverLibraries_ThrowsNamingThem()
    {
        Assert.SkipUnless(KvFetcher.Cuda.Native.NvdecLibraries.Problem is not null, "The NVIDIA driver's libraries load here.");
        DllNotFoundException e = Assert.Throws<DllNotFoundException>(() => NvdecDevice.Open());
        Assert.Contains("lib", e.Message, StringComparison.Ordinal);
        Assert.Contains(".so.1", e.Message, StringComparison.Ordinal);
    }

    private static void SkipWithoutNvdec() => Assert.SkipUnless(NvdecTestStreams.Available, $"No NVDEC: {NvdecTestStreams.Reason}");

    private static void AssertSamePlanes(NvdecTestStream s, byte[] expected, byte[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        int first = expected.AsSpan().CommonPrefixLength(actual);
        Assert.True(first == expected.Length, $"{s.Layout} level {s.Level} {s.Kind} ({s.Format}): NVDEC differs from the CPU decoder first at byte {first}.");
    }
}
