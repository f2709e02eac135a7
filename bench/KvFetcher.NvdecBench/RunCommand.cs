using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using KvFetcher.Codecs.Video;
using KvFetcher.Cuda;
using KvFetcher.Cuda.Nvdec;

namespace KvFetcher.NvdecBench;

/// <summary>
/// <c>run --data DIR [--json FILE] [--seconds 0.5] [--sessions 1,2,4,7,8,16] [--cpu-threads 1,16] [--tune]</c>: on the GPU
/// machine, checks NVDEC's planes against the CPU decoder's (host and device paths, one session and a pool), then
/// measures decode throughput per stream group: NVDEC by number of sessions (into GPU memory, and into host memory at
/// 7 sessions), the CPU decoder by number of threads, and NVDEC and the CPU decoder together; <c>--tune</c> adds NVDEC
/// without display delay (no decode pipelining) for the 8-bit groups. Also checks that bad streams and formats are refused.
/// </summary>
internal static class RunCommand
{
    public static int Run(string[] args)
    {
        string data = Args.Option(args, "--data") ?? throw new ArgumentException("run needs --data DIR.");
        string? json = Args.Option(args, "--json");
        double seconds = Args.Double(args, "--seconds", 0.5);
        int[] sessionCounts = Args.Ints(args, "--sessions", [1, 2, 4, 7, 8, 16]);
        int[] cpuThreads = Args.Ints(args, "--cpu-threads", [1, Environment.ProcessorCount]);
        bool tune = args.Contains("--tune");
        List<BenchStream> streams = StreamSet.Read(data);
        var results = new List<Measurement>();
        string? cpuProblem = CpuProblem(streams[0]);
        Console.WriteLine(cpuProblem is null ? "CPU decoder: libkvfvideo (libavcodec) loaded" : $"CPU decoder unavailable: {cpuProblem}");
        if (!NvdecDevice.IsSupported(out string reason))
        {
            Console.WriteLine($"NVDEC unavailable: {reason}");
            return 3;
        }

        using NvdecDevice device = NvdecDevice.Open();
        Console.WriteLine($"device: {device.Name}, {Environment.ProcessorCount} CPU cores");
        foreach (int depth in new[] { 8, 10, 12 })
        {
            Console.WriteLine($"  caps {device.GetCapabilities(depth)}");
        }

        int mismatches = CheckBitExact(device, streams, cpuProblem is null);
        int accepted = CheckRefusals(device, streams);
        foreach (IGrouping<string, BenchStream> group in streams.GroupBy(s => s.Group))
        {
            BenchStream[] members = [.. group];
            foreach (int sessions in sessionCounts)
            {
                results.Add(MeasureNvdec(device, members, sessions, seconds, toDevice: true));
            }

            results.Add(MeasureNvdec(device, members, 7, seconds, toDevice: false));
            if (tune && members[0].Level == 8)
            {
                // Without display delay the parser hands each picture over before decoding the next: no pipelining.
                var serial = new NvdecDecoderOptions { DisplayDelay = 0 };
                results.Add(MeasureNvdec(device, members, 1, seconds, toDevice: true, serial) with { Path = "nvdec-delay0" });
                results.Add(MeasureNvdec(device, members, 7, seconds, toDevice: true, serial) with { Path = "nvdec-delay0" });
            }

            if (cpuProblem is null)
            {
                foreach (int threads in cpuThreads)
                {
                    results.Add(MeasureCpu(members, threads, seconds));
                }

                // Everything at once: 7 NVDEC sessions and the CPU cores the sessions' threads leave.
                int cpu = Math.Max(1, Environment.ProcessorCount - 7);
                Measurement? cpuPart = null;
                var cpuThread = new Thread(() => cpuPart = MeasureCpu(members, cpu, seconds));
                cpuThread.Start();
                Measurement nvdecPart = MeasureNvdec(device, members, 7, seconds, toDevice: true);
                cpuThread.Join();
                results.Add(nvdecPart with { Path = "combined-nvdec" });
                results.Add(cpuPart! with { Path = "combined-cpu" });
            }

            foreach (Measurement m in results.Where(r => r.Group == group.Key))
            {
                Console.WriteLine(m.Line());
            }
        }

        if (json is not null)
        {
            WriteJson(json, device.Name, mismatches, streams.Count, results);
        }

        Console.WriteLine(mismatches == 0 ? $"bit-exact: all {streams.Count} streams" : $"bit-exact: {mismatches} MISMATCHES");
        Console.WriteLine(accepted == 0 ? "refusals: every bad stream or format refused" : $"refusals: {accepted} bad streams or formats ACCEPTED");
        return mismatches == 0 && accepted == 0 ? 0 : 1;
    }

    /// <summary>Null when the CPU decoder (libkvfvideo) works here, else why not.</summary>
    private static string? CpuProblem(BenchStream stream)
    {
        try
        {
            HevcStream.Decode(stream.Data.Span, stream.Format.Width, stream.Format.Height, stream.Format.Depth, stream.Format.Frames, new byte[stream.Format.OutputBytes], stream.Kind);
            return null;
        }
        catch (DllNotFoundException ex)
        {
            return ex.Message;
        }
    }

    /// <summary>Decodes every stream with NVDEC (host, device and pool paths) and compares with the CPU decoder and the declared checksum.</summary>
    private static int CheckBitExact(NvdecDevice device, List<BenchStream> streams, bool cpu)
    {
        int mismatches = 0;
        long maxBytes = streams.Max(s => s.Format.OutputBytes);
        using var decoder = new NvdecDecoder(device);
        using DeviceBuffer buffer = device.Context.Allocate(maxBytes);
        var planes = new byte[maxBytes];
        var reference = new byte[maxBytes];
        var fromDevice = new byte[maxBytes];
        foreach (BenchStream s in streams)
        {
            int bytes = (int)s.Format.OutputBytes;
            Span<byte> nv = planes.AsSpan(0, bytes);
            Span<byte> cp = reference.AsSpan(0, bytes);
            Span<byte> dev = fromDevice.AsSpan(0, bytes);
            decoder.Decode(s.Data.Span, s.Format, nv);
            decoder.DecodeToDevice(s.Data.Span, s.Format, buffer);
            buffer.CopyTo(dev);
            if (s.Format.Depth > 8)
            {
                Span<ushort> samples = MemoryMarshal.Cast<byte, ushort>(dev);
                for (int i = 0; i < samples.Length; i++)
                {
                    samples[i] >>= 16 - s.Format.Depth;
                }
            }

            bool ok = HevcStream.Checksum(nv) == s.Checksum && nv.SequenceEqual(dev);
            if (cpu)
            {
                HevcStream.Decode(s.Data.Span, s.Format.Width, s.Format.Height, s.Format.Depth, s.Format.Frames, cp, s.Kind);
                ok &= nv.SequenceEqual(cp);
            }

            if (!ok)
            {
                mismatches++;
                Console.WriteLine($"MISMATCH {s.Group} {s.Kind} chunk {s.Chunk} ({s.Format})");
            }
        }

        // The pool: every stream at once over 8 sessions, into host planes.
        using var pool = new NvdecPool(device, 8);
        var outputs = streams.Select(s => new byte[s.Format.OutputBytes]).ToArray();
        Task[] tasks = streams.Select((s, i) => pool.DecodeAsync(s.Data, s.Format, outputs[i])).ToArray();
        Task.WaitAll(tasks);
        int poolMismatches = streams.Where((s, i) => HevcStream.Checksum(outputs[i]) != s.Checksum).Count();
        Console.WriteLine($"bit-exact check: {streams.Count} streams, NVDEC host + device paths{(cpu ? " vs the CPU decoder" : " vs declared checksums")}: {mismatches} mismatches; pool of 8: {poolMismatches} mismatches");
        return mismatches + poolMismatches;
    }

    /// <summary>
    /// What NVDEC makes of bad input: truncated streams, declared formats that differ from the stream (each must raise
    /// InvalidKvDataException, and the session must decode the next good stream), and streams with one flipped byte
    /// (counted by outcome: refused, decoded to other planes, decoded to the same planes). Returns the bad inputs accepted.
    /// </summary>
    private static int CheckRefusals(NvdecDevice device, List<BenchStream> streams)
    {
        using var decoder = new NvdecDecoder(device);
        int accepted = 0;
        int refused = 0;
        int flipRefused = 0;
        int flipWrong = 0;
        int flipSame = 0;
        foreach (BenchStream s in streams)
        {
            NvdecStreamFormat f = s.Format;
            var cases = new (string Name, ReadOnlyMemory<byte> Data, NvdecStreamFormat Format)[]
            {
                ("truncated to half", s.Data[..(s.Data.Length / 2)], f),
                ("wider", s.Data, f with { Width = f.Width + 8 }),
                ("other depth", s.Data, f with { Depth = f.Depth == 8 ? 10 : 8 }),
                ("one frame more", s.Data, f with { Frames = f.Frames + 1 }),
            };
            foreach ((string name, ReadOnlyMemory<byte> data, NvdecStreamFormat format) in cases)
            {
                try
                {
                    decoder.Decode(data.Span, format, new byte[format.OutputBytes]);
                    accepted++;
                    Console.WriteLine($"ACCEPTED {name}: {s.Group} {s.Kind} ({f})");
                }
                catch (KvFetcher.Core.InvalidKvDataException)
                {
                    refused++;
                }
            }

            var planes = new byte[f.OutputBytes];
            decoder.Decode(s.Data.Span, f, planes);
            if (HevcStream.Checksum(planes) != s.Checksum)
            {
                accepted++;
                Console.WriteLine($"after refusals the session decodes {s.Group} {s.Kind} WRONG");
            }

            byte[] flipped = s.Data.ToArray();
            flipped[flipped.Length / 2] ^= 0x5a;
            try
            {
                decoder.Decode(flipped, f, planes);
                if (HevcStream.Checksum(planes) != s.Checksum)
                {
                    flipWrong++;
                }
                else
                {
                    flipSame++;
                }
            }
            catch (KvFetcher.Core.InvalidKvDataException)
            {
                flipRefused++;
            }
        }

        Console.WriteLine($"refusals: {refused} bad streams/formats refused, {accepted} accepted; one flipped byte: {flipRefused} refused, {flipWrong} decoded to other planes (caught only by the record checksum), {flipSame} decoded unchanged; {decoder.DecodersCreated} hardware decoders created");
        return accepted;
    }

    private static Measurement MeasureNvdec(NvdecDevice device, BenchStream[] streams, int sessions, double seconds, bool toDevice, NvdecDecoderOptions? options = null)
    {
        long slotBytes = streams.Max(s => s.Format.OutputBytes);
        int window = 3 * sessions;
        using var pool = new NvdecPool(device, sessions, options);
        using DeviceBuffer buffer = device.Context.Allocate(slotBytes * window);
        byte[][] host = toDevice ? [] : Enumerable.Range(0, window).Select(_ => new byte[slotBytes]).ToArray();
        var inflight = new Task?[window];
        Totals Run(int minimum, double limit)
        {
            var totals = default(Totals);
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < minimum || clock.Elapsed.TotalSeconds < limit; i++)
            {
                int slot = i % window;
                inflight[slot]?.GetAwaiter().GetResult();
                BenchStream s = streams[i % streams.Length];
                inflight[slot] = toDevice
                    ? pool.EnqueueAsync(s.Data, s.Format, buffer, slot * slotBytes).AsTask().GetAwaiter().GetResult()
                    : pool.EnqueueAsync(s.Data, s.Format, host[slot].AsMemory(0, (int)s.Format.OutputBytes)).AsTask().GetAwaiter().GetResult();
                totals.Add(s);
            }

            foreach (Task? task in inflight)
            {
                task?.GetAwaiter().GetResult();
            }

            totals.Seconds = clock.Elapsed.TotalSeconds;
            return totals;
        }

        Run(2 * window, 0); // warm-up: every session creates its hardware decoder
        Totals measured = Run(window, seconds);
        return Measurement.From(toDevice ? "nvdec-device" : "nvdec-host", streams[0], sessions, measured);
    }

    private static Measurement MeasureCpu(BenchStream[] streams, int threads, double seconds)
    {
        var perThread = new Totals[threads];
        var clock = Stopwatch.StartNew();
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var planes = new byte[streams.Max(s => s.Format.OutputBytes)];
            var totals = default(Totals);
            for (int i = t; totals.Streams == 0 || clock.Elapsed.TotalSeconds < seconds; i += threads)
            {
                BenchStream s = streams[i % streams.Length];
                HevcStream.Decode(s.Data.Span, s.Format.Width, s.Format.Height, s.Format.Depth, s.Format.Frames, planes.AsSpan(0, (int)s.Format.OutputBytes), s.Kind);
                totals.Add(s);
            }

            perThread[t] = totals;
        })).ToArray();
        foreach (Thread w in workers)
        {
            w.Start();
        }

        foreach (Thread w in workers)
        {
            w.Join();
        }

        var sum = default(Totals);
        foreach (Totals t in perThread)
        {
            sum.Streams += t.Streams;
            sum.Fp16Bytes += t.Fp16Bytes;
            sum.Pixels += t.Pixels;
            sum.Bitstream += t.Bitstream;
        }

        sum.Seconds = clock.Elapsed.TotalSeconds;
        return Measurement.From("cpu", streams[0], threads, sum);
    }

    private static void WriteJson(string path, string device, int mismatches, int streams, List<Measurement> results)
    {
        using var file = File.Create(path);
        using var w = new Utf8JsonWriter(file, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteString("device", device);
        w.WriteNumber("cpu_cores", Environment.ProcessorCount);
        w.WriteNumber("streams", streams);
        w.WriteNumber("mismatches", mismatches);
        w.WriteStartArray("results");
        foreach (Measurement m in results)
        {
            w.WriteStartObject();
            w.WriteString("path", m.Path);
            w.WriteString("group", m.Group);
            w.WriteString("frame", m.Frame);
            w.WriteNumber("depth", m.Depth);
            w.WriteNumber("workers", m.Workers);
            w.WriteNumber("streams", m.Totals.Streams);
            w.WriteNumber("seconds", m.Totals.Seconds);
            w.WriteNumber("fp16_mb_per_s", m.Fp16MBps);
            w.WriteNumber("mpixel_per_s", m.MpixelPerSecond);
            w.WriteNumber("bitstream_mb_per_s", m.BitstreamMBps);
            w.WriteEndObject();
        }

        w.WriteEndArray();
        w.WriteEndObject();
    }

    /// <summary>What a measurement decoded: streams, the fp16 KV they hold, luma pixels and bitstream bytes.</summary>
    private struct Totals
    {
        public long Streams;
        public long Fp16Bytes;
        public long Pixels;
        public long Bitstream;
        public double Seconds;

        public void Add(BenchStream s)
        {
            Streams++;
            Fp16Bytes += s.Fp16Bytes;
            Pixels += s.Format.Pixels;
            Bitstream += s.Data.Length;
        }
    }

    private sealed record Measurement(string Path, string Group, string Frame, int Depth, int Workers, Totals Totals)
    {
        public double Fp16MBps => Totals.Fp16Bytes / Totals.Seconds / 1e6;

        public double MpixelPerSecond => Totals.Pixels / Totals.Seconds / 1e6;

        public double BitstreamMBps => Totals.Bitstream / Totals.Seconds / 1e6;

        public static Measurement From(string path, BenchStream first, int workers, Totals totals) =>
            new(path, first.Group, $"{first.Format.Width}x{first.Format.Height}x{first.Format.Frames}", first.Format.Depth, workers, totals);

        public string Line() => string.Create(CultureInfo.InvariantCulture,
            $"{Group,-22} {Frame,-14} {Depth,2}-bit {Path,-15} {Workers,3}: {Fp16MBps,8:F1} MB/s fp16 KV {MpixelPerSecond,8:F1} Mpixel/s {BitstreamMBps,7:F1} MB/s bitstream ({Totals.Streams} streams, {Totals.Seconds:F2} s)");
    }
}
