using System.Globalization;
using KvFetcher.Cuda.Nvdec;

namespace KvFetcher.NvdecBench;

/// <summary>One encoded stream of the set: which chunk and codec setting it came from, its format and bytes.</summary>
internal sealed record BenchStream(string Layout, int ChunkTokens, int Level, string Kind, int Chunk, NvdecStreamFormat Format, ulong Checksum, long Fp16Bytes, ReadOnlyMemory<byte> Data)
{
    /// <summary>The measurement group: layout, chunk size and level.</summary>
    public string Group => $"{Layout}/{ChunkTokens}/{Level}";
}

/// <summary>
/// The streams <c>prepare</c> writes and <c>run</c> reads: <c>streams.bin</c> (the Annex B streams back to back) and
/// <c>manifest.tsv</c> (one line per stream: layout, chunk tokens, level, K/V, chunk, width, height, depth, frames,
/// offset, length, checksum of the decoded planes, bytes of fp16 KV the stream holds).
/// </summary>
internal static class StreamSet
{
    private const string Header = "layout\tchunk_tokens\tlevel\tkind\tchunk\twidth\theight\tdepth\tframes\toffset\tlength\tchecksum\tfp16_bytes";

    public static void Write(string directory, IReadOnlyList<BenchStream> streams)
    {
        Directory.CreateDirectory(directory);
        using var data = new FileStream(Path.Combine(directory, "streams.bin"), FileMode.Create, FileAccess.Write);
        using var manifest = new StreamWriter(Path.Combine(directory, "manifest.tsv"));
        manifest.WriteLine(Header);
        foreach (BenchStream s in streams)
        {
            long offset = data.Position;
            data.Write(s.Data.Span);
            NvdecStreamFormat f = s.Format;
            manifest.WriteLine(string.Join('\t', s.Layout, Invariant(s.ChunkTokens), Invariant(s.Level), s.Kind, Invariant(s.Chunk), Invariant(f.Width), Invariant(f.Height),
                Invariant(f.Depth), Invariant(f.Frames), Invariant(offset), Invariant(s.Data.Length), s.Checksum.ToString("x16", CultureInfo.InvariantCulture), Invariant(s.Fp16Bytes)));
        }
    }

    public static List<BenchStream> Read(string directory)
    {
        byte[] data = File.ReadAllBytes(Path.Combine(directory, "streams.bin"));
        string[] lines = File.ReadAllLines(Path.Combine(directory, "manifest.tsv"));
        if (lines.Length == 0 || lines[0] != Header)
        {
            throw new InvalidDataException($"{directory}/manifest.tsv does not start with the header '{Header}'.");
        }

        var streams = new List<BenchStream>();
        foreach (string line in lines.Skip(1))
        {
            string[] f = line.Split('\t');
            var format = new NvdecStreamFormat(Int(f[5]), Int(f[6]), Int(f[7]), Int(f[8]));
            long offset = long.Parse(f[9], CultureInfo.InvariantCulture);
            int length = Int(f[10]);
            streams.Add(new BenchStream(f[0], Int(f[1]), Int(f[2]), f[3], Int(f[4]), format, ulong.Parse(f[11], NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                long.Parse(f[12], CultureInfo.InvariantCulture), data.AsMemory((int)offset, length)));
        }

        return streams;
    }

    private static string Invariant(long value) => value.ToString(CultureInfo.InvariantCulture);

    private static int Int(string text) => int.Parse(text, CultureInfo.InvariantCulture);
}
