using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using KvFetcher.Core;
using KvFetcher.Core.Containers;
using KvFetcher.Core.Keys;
using KvFetcher.Server;
using KvFetcher.Store;
using KvFetcher.Store.Disk;
using KvFetcher.Store.Redis;
using KvFetcher.Store.Remote;
using KvFetcher.Store.Tests.Redis;

namespace KvFetcher.Bench;

/// <summary>
/// <c>kvfetch-bench store</c>: loopback put and get throughput and latency of the store backends side by side in one
/// run: the embedded disk store, our HTTP server (in this process) through its client, and a <c>redis-server</c> that
/// the benchmark starts itself (one instance, persistence off). Every cell (object size x concurrent clients) runs on
/// every backend before the next cell, so the backends see the same machine state.
/// </summary>
internal static class StoreBenchmark
{
    public const string Usage =
        """
        usage: kvfetch-bench store [--sizes 64K,1M,8M] [--clients 1,8,32] [--backends disk,server,redis]
                                   [--cell-mb 256] [--fsync on|off] [--json docs/results/store.json]
          Each cell moves about --cell-mb MB per phase (at least 4 objects per client), puts first, then gets of the
          objects just stored; clients share one store instance per backend (one HttpClient, one Redis multiplexer).
          --fsync sets whether the disk store and our server flush every put to disk (on: their real setting);
          redis-server then runs with the same durability (append-only file, appendfsync always; off: in memory only).
        """;

    private const int MinOpsPerClient = 4;

    private static readonly string[] s_allBackends = ["disk", "server", "redis"];

    public static int Run(string[] args) => RunAsync(args).GetAwaiter().GetResult();

    private static async Task<int> RunAsync(string[] args)
    {
        int[] sizes = ParseList(BenchArgs.Option(args, "--sizes") ?? "64K,1M,8M", ParseSize);
        int[] clientCounts = ParseList(BenchArgs.Option(args, "--clients") ?? "1,8,32", s => int.Parse(s, CultureInfo.InvariantCulture));
        string[] names = ParseList(BenchArgs.Option(args, "--backends") ?? string.Join(',', s_allBackends), s => s);
        long cellBytes = long.Parse(BenchArgs.Option(args, "--cell-mb") ?? "256", CultureInfo.InvariantCulture) * 1_000_000;
        bool fsync = (BenchArgs.Option(args, "--fsync") ?? "on") switch
        {
            "on" => true,
            "off" => false,
            string other => throw new ArgumentException($"--fsync must be on or off, not '{other}'."),
        };
        string jsonPath = BenchArgs.Option(args, "--json") ?? Path.Combine(BenchArgs.RepositoryRoot(), "docs", "results", "store.json");
        if (names.FirstOrDefault(n => !s_allBackends.Contains(n)) is { } unknown)
        {
            throw new ArgumentException($"Unknown backend '{unknown}'; choose from {string.Join(", ", s_allBackends)}.");
        }

        if (sizes.Any(s => s < ChunkContainer.GetSize(0, 0)) || clientCounts.Any(c => c < 1) || cellBytes <= 0)
        {
            throw new ArgumentException("Sizes must hold a container header and checksum; clients and --cell-mb must be positive.");
        }

        string work = Path.Combine(Path.GetTempPath(), $"kvf-storebench-{Guid.NewGuid():N}");
        Directory.CreateDirectory(work);
        var backends = new List<Backend>();
        var results = new Dictionary<string, Dictionary<string, double>>();
        var rows = new List<Row>();
        try
        {
            foreach (string name in names)
            {
                backends.Add(await Backend.StartAsync(name, Path.Combine(work, name), fsync));
            }

            Console.Error.WriteLine($"store benchmark: {string.Join(", ", backends.Select(b => b.Store.Description))}");
            foreach (int size in sizes)
            {
                byte[] container = MakeContainer(size);
                foreach (int clients in clientCounts)
                {
                    int opsPerClient = (int)Math.Max(MinOpsPerClient, Math.Ceiling(cellBytes / (double)size / clients));
                    foreach (Backend backend in backends)
                    {
                        foreach (Phase phase in await RunCellAsync(backend, container, clients, opsPerClient))
                        {
                            var row = new Row(backend.Name, phase.Op, size, clients, phase);
                            rows.Add(row);
                            results[$"{row.Backend}/{row.Op}/{SizeLabel(size)}/c{clients}"] = new Dictionary<string, double>
                            {
                                ["mb_per_s"] = phase.MegabytesPerSecond,
                                ["p50_ms"] = phase.P50Milliseconds,
                                ["p99_ms"] = phase.P99Milliseconds,
                                ["cpu_ms_per_mb"] = phase.CpuMsPerMegabyte,
                                ["ops"] = phase.Ops,
                                ["object_bytes"] = size,
                                ["clients"] = clients,
                            };
                            Console.Error.WriteLine($"  {row.Backend,-6} {row.Op} {SizeLabel(size),4} x{clients,-2}: {phase.MegabytesPerSecond,8:F0} MB/s  p50 {phase.P50Milliseconds,8:F2} ms  p99 {phase.P99Milliseconds,8:F2} ms  cpu {phase.CpuMsPerMegabyte,6:F2} ms/MB");
                        }
                    }
                }
            }
        }
        finally
        {
            foreach (Backend backend in backends)
            {
                await backend.DisposeAsync();
            }

            Directory.Delete(work, recursive: true);
        }

        results["run"] = new Dictionary<string, double>
        {
            ["processors"] = Environment.ProcessorCount,
            ["fsync"] = fsync ? 1 : 0,
            ["cell_bytes"] = cellBytes,
        };
        PrintTable(rows, backends.Select(b => b.Name).ToArray(), fsync, cellBytes, results);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
        await File.WriteAllTextAsync(jsonPath, JsonSerializer.Serialize(results, BenchJson.Default.DictionaryStringDictionaryStringDouble));
        Console.Error.WriteLine($"wrote {jsonPath}");
        return 0;
    }

    /// <summary>
    /// One cell on one backend: <paramref name="clients"/> concurrent clients each put <paramref name="opsPerClient"/>
    /// objects (cycling over their own keys), then each get as many, spread over every client's keys; then the keys go.
    /// </summary>
    private static async Task<Phase[]> RunCellAsync(Backend backend, byte[] container, int clients, int opsPerClient)
    {
        IKvStore store = backend.Store;
        string cell = Guid.NewGuid().ToString("N")[..8];
        int keysPerClient = Math.Min(opsPerClient, Math.Max(1, (int)(256_000_000 / container.Length / clients)));
        ObjectKey[][] keys = [.. Enumerable.Range(0, clients).Select(c =>
            Enumerable.Range(0, keysPerClient).Select(k => ObjectKey.Parse($"bench-{cell}-{c}-{k}")).ToArray())];
        ObjectKey[] all = [.. keys.SelectMany(k => k)];

        // Untimed warm-up: every client puts and gets once (connections opened, code paths run).
        await Task.WhenAll(Enumerable.Range(0, clients).Select(async c =>
        {
            await store.PutAsync(keys[c][0], container);
            await GetExactAsync(store, keys[c][0], new ArrayBufferWriter<byte>(container.Length), container.Length);
        }));

        Phase put = await MeasureAsync(backend, "put", clients, opsPerClient, container.Length, (c, i, _) => store.PutAsync(keys[c][i % keysPerClient], container));
        Phase get = await MeasureAsync(backend, "get", clients, opsPerClient, container.Length, async (c, i, buffer) =>
            await GetExactAsync(store, all[((c * keysPerClient) + i) % all.Length], buffer, container.Length));
        foreach (ObjectKey key in all)
        {
            await store.DeleteAsync(key);
        }

        return [put, get];
    }

    private static async ValueTask GetExactAsync(IKvStore store, ObjectKey key, ArrayBufferWriter<byte> buffer, int length)
    {
        buffer.ResetWrittenCount();
        StoreRead read = await store.GetAsync(key, buffer);
        if (!read.Found || read.BytesWritten != length)
        {
            throw new InvalidOperationException($"{store.Description} lost '{key}' (found {read.Found}, {read.BytesWritten} of {length} bytes).");
        }
    }

    private static async Task<Phase> MeasureAsync(
        Backend backend, string op, int clients, int opsPerClient, int objectBytes, Func<int, int, ArrayBufferWriter<byte>, ValueTask> operation)
    {
        double[] latencies = new double[clients * opsPerClient];
        var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task[] workers = [.. Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            var buffer = new ArrayBufferWriter<byte>(objectBytes);
            await start.Task;
            for (int i = 0; i < opsPerClient; i++)
            {
                long began = Stopwatch.GetTimestamp();
                await operation(c, i, buffer);
                latencies[(c * opsPerClient) + i] = Stopwatch.GetElapsedTime(began).TotalMilliseconds;
            }
        }))];
        TimeSpan cpu = backend.ProcessorTime();
        long wall = Stopwatch.GetTimestamp();
        start.SetResult();
        await Task.WhenAll(workers);
        double seconds = Stopwatch.GetElapsedTime(wall).TotalSeconds;
        double megabytes = latencies.Length * (double)objectBytes / 1e6;
        double cpuMs = (backend.ProcessorTime() - cpu).TotalMilliseconds;
        Array.Sort(latencies);
        return new Phase(op, latencies.Length, megabytes / seconds, Percentile(latencies, 0.50), Percentile(latencies, 0.99), cpuMs / megabytes);
    }

    private static double Percentile(double[] sorted, double p) => sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)];

    private static void PrintTable(List<Row> rows, string[] backends, bool fsync, long cellBytes, Dictionary<string, Dictionary<string, double>> results)
    {
        bool ratio = backends.Contains("server") && backends.Contains("redis");
        Console.WriteLine($"Store loopback benchmark, {Environment.ProcessorCount} cores; MB/s = 10^6 bytes/s over all clients; latency per operation; " +
            "CPU ms/MB = processor time of client and server together (this process, plus redis-server's) per 10^6 bytes moved; " +
            $"~{cellBytes / 1_000_000} MB per cell and phase; disk and server fsync {(fsync ? "on" : "off")}; " +
            (fsync ? "redis-server with the same durability (append-only file, appendfsync always)." : "redis-server in memory, no persistence."));
        Console.WriteLine();
        string header = "| op | size | clients | " + string.Join(" | ", backends.Select(b => $"{b} MB/s")) + " | "
            + string.Join(" | ", backends.Select(b => $"{b} p50 / p99 ms")) + " | " + string.Join(" | ", backends.Select(b => $"{b} CPU ms/MB"))
            + (ratio ? " | server/redis MB/s | server/redis p50 | server/redis CPU |" : " |");
        Console.WriteLine(header);
        Console.WriteLine("|" + string.Concat(Enumerable.Repeat(" --- |", header.Count(ch => ch == '|') - 1)));
        var logRatios = new Dictionary<string, List<double>>();
        foreach (IGrouping<(string Op, int Size, int Clients), Row> cell in rows.GroupBy(r => (r.Op, r.Size, r.Clients)).OrderBy(g => g.Key.Op == "get").ThenBy(g => g.Key.Size).ThenBy(g => g.Key.Clients))
        {
            Dictionary<string, Phase> by = cell.ToDictionary(r => r.Backend, r => r.Phase);
            string line = $"| {cell.Key.Op} | {SizeLabel(cell.Key.Size)} | {cell.Key.Clients} | "
                + string.Join(" | ", backends.Select(b => by[b].MegabytesPerSecond.ToString("F0", CultureInfo.InvariantCulture))) + " | "
                + string.Join(" | ", backends.Select(b => string.Create(CultureInfo.InvariantCulture, $"{by[b].P50Milliseconds:F2} / {by[b].P99Milliseconds:F2}"))) + " | "
                + string.Join(" | ", backends.Select(b => by[b].CpuMsPerMegabyte.ToString("F2", CultureInfo.InvariantCulture)));
            if (ratio)
            {
                double throughput = by["server"].MegabytesPerSecond / by["redis"].MegabytesPerSecond;
                double p50 = by["server"].P50Milliseconds / by["redis"].P50Milliseconds;
                double cpu = by["server"].CpuMsPerMegabyte / by["redis"].CpuMsPerMegabyte;
                line += string.Create(CultureInfo.InvariantCulture, $" | {throughput:F2}x | {p50:F2}x | {cpu:F2}x");
                results[$"ratio/server-vs-redis/{cell.Key.Op}/{SizeLabel(cell.Key.Size)}/c{cell.Key.Clients}"] =
                    new Dictionary<string, double> { ["throughput"] = throughput, ["p50_latency"] = p50, ["cpu_per_byte"] = cpu };
                if (!logRatios.TryGetValue(cell.Key.Op, out List<double>? list))
                {
                    logRatios[cell.Key.Op] = list = [];
                }

                list.Add(Math.Log(throughput));
            }

            Console.WriteLine(line + " |");
        }

        foreach ((string op, List<double> logs) in logRatios)
        {
            double geomean = Math.Exp(logs.Average());
            results[$"ratio/server-vs-redis/{op}/geomean"] = new Dictionary<string, double> { ["throughput"] = geomean };
            Console.WriteLine();
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{op}: our server / redis throughput, geometric mean over {logs.Count} cells: {geomean:F2}x"));
        }
    }

    /// <summary>An intact Raw container of exactly <paramref name="size"/> bytes (stores only verify, never decode).</summary>
    private static byte[] MakeContainer(int size)
    {
        int payloadBytes = size - (int)ChunkContainer.GetSize(0, 0);
        byte[] payload = new byte[payloadBytes];
        RandomNumberGenerator.Fill(payload);
        var header = new ChunkHeader
        {
            Codec = CodecId.Raw,
            Level = 0,
            DType = DType.Float16,
            Key = new ChunkKey(new Hash256(1, 2, 3, (ulong)size)),
            Model = new ModelFingerprint(new Hash256(5, 6, 7, 8)),
            TokenStart = 0,
            Shape = new KvShape(1, Math.Max(1, payloadBytes / 4), 1, 1),
        };
        var output = new ArrayBufferWriter<byte>(size);
        ChunkContainer.Write(header, [], payload, output);
        return output.WrittenSpan.ToArray();
    }

    private static T[] ParseList<T>(string text, Func<string, T> parse) =>
        [.. text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(parse)];

    /// <summary><c>65536</c>, <c>64K</c> or <c>8M</c> (binary multiples).</summary>
    private static int ParseSize(string text)
    {
        (string digits, int unit) = char.ToUpperInvariant(text[^1]) switch
        {
            'K' => (text[..^1], 1 << 10),
            'M' => (text[..^1], 1 << 20),
            _ => (text, 1),
        };
        return checked(int.Parse(digits, CultureInfo.InvariantCulture) * unit);
    }

    private static string SizeLabel(int size) =>
        size % (1 << 20) == 0 ? $"{size >> 20}M" : size % (1 << 10) == 0 ? $"{size >> 10}K" : size.ToString(CultureInfo.InvariantCulture);

    /// <summary>A measured phase; <see cref="CpuMsPerMegabyte"/> is the processor time of both ends (this process and any server process) per 10^6 bytes moved.</summary>
    private sealed record Phase(string Op, int Ops, double MegabytesPerSecond, double P50Milliseconds, double P99Milliseconds, double CpuMsPerMegabyte);

    private sealed record Row(string Backend, string Op, int Size, int Clients, Phase Phase);

    /// <summary>A store under test and whatever serves it.</summary>
    private sealed class Backend(string name, IKvStore store, Func<ValueTask> stop, Func<TimeSpan>? serverProcessorTime = null) : IAsyncDisposable
    {
        public string Name { get; } = name;

        public IKvStore Store { get; } = store;

        /// <summary>Processor time of this process (the clients, and our server when it runs here) and of any server process.</summary>
        public TimeSpan ProcessorTime()
        {
            using var self = Process.GetCurrentProcess();
            return self.TotalProcessorTime + (serverProcessorTime?.Invoke() ?? TimeSpan.Zero);
        }

        public static async Task<Backend> StartAsync(string name, string directory, bool fsync)
        {
            switch (name)
            {
                case "disk":
                    return new Backend(name, DiskKvStore.Open(new DiskKvStoreOptions { Directory = directory, Fsync = fsync }), () => ValueTask.CompletedTask);
                case "server":
                {
                    string token = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(24));
                    var options = new StoreServerOptions { DataDirectory = directory, Token = token, Urls = ["http://127.0.0.1:0"] };
                    StoreServer server = fsync
                        ? await StoreServer.StartAsync(options)
                        : await StoreServer.StartAsync(options, DiskKvStore.Open(new DiskKvStoreOptions { Directory = directory, Fsync = false }), ownsStore: true);
                    var client = new HttpKvStore(new HttpKvStoreOptions { BaseAddress = server.Addresses[0], Token = token, RequestTimeout = TimeSpan.FromMinutes(1) });
                    return new Backend(name, client, () => server.DisposeAsync());
                }

                default:
                {
                    RedisDeployment redis = await RedisDeployment.StartSingleAsync(durable: fsync);
                    try
                    {
                        RedisKvStore client = await RedisKvStore.ConnectAsync(new RedisKvStoreOptions
                        {
                            ConnectionString = redis.ConnectionString,
                            OperationTimeout = TimeSpan.FromMinutes(1),
                        });
                        return new Backend(name, client, () => redis.DisposeAsync(), () => redis.ServerProcessorTime);
                    }
                    catch
                    {
                        await redis.DisposeAsync();
                        throw;
                    }
                }
            }
        }

        public async ValueTask DisposeAsync()
        {
            await Store.DisposeAsync();
            await stop();
        }
    }
}
