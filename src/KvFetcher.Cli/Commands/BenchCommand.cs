using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using KvFetcher.Runtime;
using KvFetcher.Engine;
using KvFetcher.Benchmarking;
using KvFetcher.Fetch;

namespace KvFetcher.Cli.Commands;

/// <summary>
/// <c>kvfetch bench</c>: the TTFT sweep (strategies x bandwidths x stored contexts, plus a jitter profile) on the
/// bundled model; writes JSON, a markdown table with the lower bound and ratios, and PNG plots of TTFT vs bandwidth.
/// </summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        Option<string?> model = CliOptions.Model();
        Option<DirectoryInfo> output = new("--output", "-o") { Description = "Folder for ttft.json, ttft.md and ttft-*.png.", DefaultValueFactory = _ => new DirectoryInfo("bench-results") };
        Option<string> contexts = new Option<string>("--contexts") { Description = "Stored context lengths in tokens (multiples of 256).", DefaultValueFactory = _ => "2048,3840" }
            .Parses(text => ParseContexts(text));
        Option<string> bandwidths = new Option<string>("--bandwidths") { Description = "Link rates in Mbit/s.", DefaultValueFactory = _ => "10,50,100,500,1000,10000" }
            .Parses(text => ParseRates(text));
        Option<string> strategies = new("--strategies") { Description = "Strategies to compare.", DefaultValueFactory = _ => "compute,fetch-raw,fetch-cachegen0,fetch-video8,cake-raw,ours" };
        Option<string> ladder = new("--ladder") { Description = "The variants every chunk is stored as (ours picks among them).", DefaultValueFactory = _ => "raw,exact,cachegen0,video8,video4" };
        Option<bool> interleave = new("--interleave") { Description = "Run a point's strategies in rounds (each once per round, rotating) instead of each strategy's repeats back to back." };
        Option<string?> jitter = new("--jitter") { Description = "Jitter profile for the longest context ('none' to skip).", DefaultValueFactory = _ => "200Mbps@500ms,20Mbps@500ms" };
        Option<int> repeats = new Option<int>("--repeats") { Description = "Runs per point (median reported).", DefaultValueFactory = _ => 1 }.AtLeast(1);
        Option<DirectoryInfo?> documents = new("--documents") { Description = "Documents whose tokens form the contexts (default: the bundled held-out set)." };
        Option<int> threads = new Option<int>("--threads") { Description = "Kernel threads (0: one per processor).", DefaultValueFactory = _ => 0 }.AtLeast(0);
        Option<string?> store = new("--store") { Description = "Run against this store (e.g. a kvfetch serve URL behind a real shaped link) instead of a temporary disk store." };
        Option<double?> linkMbps = new("--link-mbps") { Description = "With --store: the real link's rate; the shaper is off and one point per context is measured." };
        Option<EngineKind> engine = CliOptions.Engine();
        Option<FileInfo?> render = new("--render") { Description = "Only write ttft.md and the plots for a ttft.json measured elsewhere (e.g. on the GPU machine)." };
        Option<bool> mixed = new("--mixed") { Description = "Run the mixed workload instead: reuse requests among a background load, one FIFO queue vs a separate waiting queue." };
        Option<bool> serving = new("--serving") { Description = "Run the serving benchmark instead: Poisson arrivals of reuse and fresh requests through the engine loop, reuse off / fetch (waiting queue) / cake / ours / ours-layer, at --gbps link rates and --rates arrival rates." };
        Option<string> gbps = new("--gbps") { Description = "With --serving: link rates in Gbit/s.", DefaultValueFactory = _ => "1,4,16" };
        Option<string> rates = new("--rates") { Description = "With --serving: arrival rates in requests/s (both classes).", DefaultValueFactory = _ => "1,2" };
        Option<int> requests = new("--requests") { Description = "With --serving: arrivals per run.", DefaultValueFactory = _ => 24 };
        Option<int> context = new("--context") { Description = "With --serving: stored context tokens of a reuse request (a multiple of 256).", DefaultValueFactory = _ => 3072 };
        Option<int> fresh = new("--fresh") { Description = "With --serving: prompt tokens of a request without stored context.", DefaultValueFactory = _ => 384 };
        var command = new Command("bench", "Measure TTFT per strategy across bandwidths and context lengths.")
        {
            model, output, contexts, bandwidths, strategies, ladder, interleave, jitter, repeats, documents, threads, store, linkMbps, mixed, serving, gbps, rates, requests, context, fresh, engine, render,
        };
        command.SetAction(parse => CliOptions.Run(parse, () =>
        {
            if (parse.GetValue(render) is { } measured)
            {
                TtftSweepResult elsewhere = JsonSerializer.Deserialize(File.ReadAllText(measured.FullName), BenchmarkJson.Default.TtftSweepResult)
                    ?? throw new InvalidDataException($"{measured.FullName} holds no sweep result.");
                return Report(elsewhere, parse.GetValue(output)!);
            }

            using LocalEngine local = CliOptions.OpenEngine(parse.GetValue(model), parse.GetValue(engine), parse.GetValue(threads));
            IInferenceModel lm = local.Model;
            DirectoryInfo folder = parse.GetValue(output)!;
            folder.Create();
            if (parse.GetValue(serving))
            {
                ServingWorkloadResult served = ServingWorkload.RunAsync(lm, new ServingWorkloadOptions
                {
                    DocumentsDirectory = parse.GetValue(documents)?.FullName ?? DefaultDocuments(),
                    Gbps = [.. Split(parse.GetValue(gbps)!).Select(s => double.Parse(s, CultureInfo.InvariantCulture))],
                    Rates = [.. Split(parse.GetValue(rates)!).Select(s => double.Parse(s, CultureInfo.InvariantCulture))],
                    Requests = parse.GetValue(requests),
                    ContextTokens = parse.GetValue(context),
                    FreshTokens = parse.GetValue(fresh),
                    Restorer = local.Restorer,
                    Log = Console.Error.WriteLine,
                }).GetAwaiter().GetResult();
                File.WriteAllText(Path.Combine(folder.FullName, "serving.json"), JsonSerializer.Serialize(served, BenchmarkJson.Default.ServingWorkloadResult));
                string servingTable = ServingWorkload.Markdown(served);
                File.WriteAllText(Path.Combine(folder.FullName, "serving.md"), servingTable);
                Console.WriteLine(servingTable);
                return 0;
            }

            if (parse.GetValue(mixed))
            {
                IReadOnlyList<MixedWorkloadRow> rows = MixedWorkload.RunAsync(lm, new MixedWorkloadOptions
                {
                    DocumentsDirectory = parse.GetValue(documents)?.FullName ?? DefaultDocuments(),
                    Restorer = local.Restorer,
                    Log = Console.Error.WriteLine,
                }).GetAwaiter().GetResult();
                File.WriteAllText(Path.Combine(folder.FullName, "mixed.json"), JsonSerializer.Serialize(rows, BenchmarkJson.Default.IReadOnlyListMixedWorkloadRow));
                string mixedTable = "| queueing | requests | count | TTFT p50 ms | TTFT p99 ms | mean ms |\n| --- | --- | ---: | ---: | ---: | ---: |\n" +
                    string.Concat(rows.Select(r => string.Create(CultureInfo.InvariantCulture, $"| {r.Queueing} | {r.Requests} | {r.Count} | {r.P50Ms:F0} | {r.P99Ms:F0} | {r.MeanMs:F0} |\n")));
                File.WriteAllText(Path.Combine(folder.FullName, "mixed.md"), mixedTable);
                Console.WriteLine(mixedTable);
                return 0;
            }

            string? jitterText = parse.GetValue(jitter);
            var options = new TtftSweepOptions
            {
                Contexts = ParseContexts(parse.GetValue(contexts)!),
                BandwidthsMbps = ParseRates(parse.GetValue(bandwidths)!),
                Strategies = Split(parse.GetValue(strategies)!),
                Ladder = [.. Split(parse.GetValue(ladder)!).Select(KvVariant.Parse)],
                Jitter = jitterText is null or "none" ? null : jitterText,
                Repeats = parse.GetValue(repeats),
                Interleave = parse.GetValue(interleave),
                DocumentsDirectory = parse.GetValue(documents)?.FullName ?? DefaultDocuments(),
                Store = parse.GetValue(store),
                RealLinkMbps = parse.GetValue(linkMbps),
                Restorer = local.Restorer,
                Log = Console.Error.WriteLine,
            };
            TtftSweepResult result = TtftSweep.RunAsync(lm, options).GetAwaiter().GetResult();
            File.WriteAllText(Path.Combine(folder.FullName, "ttft.json"), JsonSerializer.Serialize(result, BenchmarkJson.Default.TtftSweepResult));
            return Report(result, folder);
        }));
        return command;
    }

    private static int Report(TtftSweepResult result, DirectoryInfo folder)
    {
        folder.Create();
        string table = TtftReport.Markdown(result);
        File.WriteAllText(Path.Combine(folder.FullName, "ttft.md"), table);
        TtftReport.Plots(result, folder.FullName);
        Console.WriteLine(table);
        return 0;
    }

    /// <summary>Context lengths: positive multiples of the 256-token chunk, as the help says.</summary>
    private static int[] ParseContexts(string text)
    {
        int[] contexts = [.. Split(text).Select(s => int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int n) ? n : -1)];
        if (contexts.Length == 0 || contexts.Any(c => c <= 0 || c % 256 != 0))
        {
            throw new FormatException($"context lengths must be positive multiples of 256 tokens (e.g. 2048,3840); got '{text}'.");
        }

        return contexts;
    }

    /// <summary>Link rates: positive numbers of Mbit/s.</summary>
    private static double[] ParseRates(string text)
    {
        double[] rates = [.. Split(text).Select(s => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double r) ? r : double.NaN)];
        if (rates.Length == 0 || rates.Any(r => !(r > 0 && double.IsFinite(r))))
        {
            throw new FormatException($"link rates must be positive numbers of Mbit/s (e.g. 10,100,1000); got '{text}'.");
        }

        return rates;
    }

    private static string[] Split(string text) => text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    private static string DefaultDocuments()
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "data", "heldout");
            if (Directory.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new DirectoryNotFoundException("data/heldout was not found above the executable; pass --documents DIR.");
    }
}
