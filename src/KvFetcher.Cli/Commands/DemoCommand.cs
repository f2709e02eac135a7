using System.CommandLine;
using System.Globalization;
using KvFetcher.Core.Containers;
using KvFetcher.Runtime;
using KvFetcher.Engine;
using KvFetcher.Engine.Generation;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Calibration;
using KvFetcher.Fetch.Fetching;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Store;
using KvFetcher.Store.Shaping;
using Spectre.Console;

namespace KvFetcher.Cli.Commands;

/// <summary>
/// <c>kvfetch demo</c>: the README's main job. Asks a question about a long bundled document twice against a KV store
/// (a fresh disk store by default): cold (a full prefill that reads nothing from the store, then stores its chunks in
/// the background) and warm (the stored prefix fetched and restored), and shows each TTFT with its per-stage timeline.
/// "Answers identical" compares the warm answer with the full prefill's, whatever the store held before.
/// </summary>
internal static class DemoCommand
{
    private const string Question = "\n\nQuestion: How do I add an optional argument that takes no value?\nAnswer:";

    public static Command Create()
    {
        Option<string?> model = CliOptions.Model();
        Option<string?> store = new("--store") { Description = "Store: a directory, http(s)://host:port (kvfetch serve) or redis://host:port. Default: a fresh temporary directory." };
        Option<FileInfo?> document = new("--document") { Description = "The long document (default: the bundled argparse howto)." };
        Option<string> strategy = new Option<string>("--strategy") { Description = "Warm-run strategy: ours, cake-raw, fetch-raw, fetch-video8, compute, ...", DefaultValueFactory = _ => "ours" }
            .Parses(text => PrefillStrategy.Parse(text));
        Option<string?> bandwidth = new Option<string?>("--bandwidth") { Description = "Shape the store's transfers, e.g. 100Mbps or 1Gbps@500ms,200Mbps@500ms." }
            .Parses(text => BandwidthSchedule.Parse(text));
        Option<int> maxTokens = new Option<int>("--max-tokens", "-n") { Description = "Answer tokens to generate.", DefaultValueFactory = _ => 40 }.AtLeast(1);
        Option<int> threads = new Option<int>("--threads") { Description = "Kernel threads (0: one per processor).", DefaultValueFactory = _ => 0 }.AtLeast(0);
        Option<EngineKind> engine = CliOptions.Engine();
        Option<FileInfo?> chunkSecret = CliOptions.ChunkSecret();
        Option<string> accuracy = CliOptions.Accuracy();
        var command = new Command("demo", "Answer a question about a long document twice, cold then warm, and show the TTFT of each.")
        {
            model, store, document, strategy, bandwidth, maxTokens, threads, engine, chunkSecret, accuracy,
        };
        command.SetAction(parse => CliOptions.Run(parse, () =>
        {
            PrefillStrategy warmStrategy = PrefillStrategy.Parse(parse.GetValue(strategy)!);
            BandwidthSchedule? shape = parse.GetValue(bandwidth) is { } text ? BandwidthSchedule.Parse(text) : null;
            string documentPath = parse.GetValue(document)?.FullName ?? Path.Combine(AppContext.BaseDirectory, "demo", "document.txt");
            ChunkAuthenticator? authenticator = CliOptions.OpenChunkSecret(parse.GetValue(chunkSecret));
            AccuracyFloor floor = AccuracyFloor.Parse(parse.GetValue(accuracy)!);
            using LocalEngine local = CliOptions.OpenEngine(parse.GetValue(model), parse.GetValue(engine), parse.GetValue(threads));
            return RunAsync(local, parse.GetValue(store), documentPath, warmStrategy, shape, parse.GetValue(maxTokens), authenticator, floor).GetAwaiter().GetResult();
        }));
        return command;
    }

    private static async Task<int> RunAsync(LocalEngine local, string? storeLocation, string documentPath, PrefillStrategy warmStrategy, BandwidthSchedule? shape, int maxTokens,
        ChunkAuthenticator? authenticator, AccuracyFloor floor)
    {
        string? temporary = storeLocation is null ? Directory.CreateTempSubdirectory("kvfetch-demo-").FullName : null;
        try
        {
            IKvStore store = await KvStores.OpenAsync(storeLocation ?? temporary!).ConfigureAwait(false);
            if (await KvStores.CheckAsync(store).ConfigureAwait(false) is { } problem)
            {
                AnsiConsole.MarkupLineInterpolated($"[yellow]store unreachable, computing without reuse until it answers: {problem}[/]");
            }

            if (shape is not null)
            {
                store = new ShapedKvStore(store, shape);
            }

            await using (store.ConfigureAwait(false))
            {
                IInferenceModel lm = local.Model;
                await using var reuse = new KvReuse(lm, store, new ReuseOptions { Authenticator = authenticator, Floor = floor }, restorer: local.Restorer);
                if (reuse.LadderWarning is { } warning)
                {
                    Console.Error.WriteLine($"kvfetch: warning: {warning}");
                }

                int[] tokens = PromptTokens(lm, documentPath, maxTokens);
                ContextPlan plan = reuse.Plan(tokens);
                AnsiConsole.MarkupLineInterpolated($"[bold]KvFetcher demo[/]: {Path.GetFileName(lm.Directory)} on {local.Choice}; document {Path.GetFileName(documentPath)}");
                AnsiConsole.MarkupLineInterpolated($"prompt {tokens.Length} tokens = {plan.Keys.Length} chunks of {plan.ChunkTokens} + question; store {store.Description}{(shape is null ? "" : $" shaped to {shape}")}; ladder {string.Join(", ", reuse.Options.Ladder)}");
                foreach (string line in reuse.Floor.Describe())
                {
                    AnsiConsole.WriteLine(line);
                }

                AnsiConsole.WriteLine();

                // Cold is a full prefill: it never reads the store, so the warm answer is compared with the real thing.
                (PrefillReport cold, string coldAnswer) = await AskAsync(lm, reuse, tokens, PrefillStrategy.ComputeOnly, maxTokens, "cold").ConfigureAwait(false);
                await PublishAsync(reuse, plan).ConfigureAwait(false);
                (PrefillReport warm, string warmAnswer) = await AskAsync(lm, reuse, tokens, warmStrategy, maxTokens, "warm").ConfigureAwait(false);

                double speedup = cold.TimeToFirstToken / warm.TimeToFirstToken;
                AnsiConsole.MarkupLineInterpolated($"[bold]TTFT cold {Ms(cold.TimeToFirstToken)} -> warm {Ms(warm.TimeToFirstToken)}: {speedup:F1}x faster[/]; answers identical to the full prefill's: {(coldAnswer == warmAnswer ? "yes" : "no (lossy variants)")}");
                return 0;
            }
        }
        finally
        {
            if (temporary is not null)
            {
                Directory.Delete(temporary, recursive: true);
            }
        }
    }

    private static int[] PromptTokens(IInferenceModel lm, string documentPath, int maxTokens)
    {
        int[] question = lm.Tokenizer.Encode(Question);
        int[] document = lm.Tokenizer.Encode(File.ReadAllText(documentPath));
        int room = lm.Config.MaxPositionEmbeddings - maxTokens - question.Length - 1;
        return [.. document.AsSpan(0, Math.Min(document.Length, room)), .. question.AsSpan(question.Length > 0 && question[0] == lm.Tokenizer.BosId ? 1 : 0)];
    }

    private static async Task<(PrefillReport Report, string Answer)> AskAsync(IInferenceModel lm, KvReuse reuse, int[] tokens, PrefillStrategy strategy, int maxTokens, string label)
    {
        using IInferenceSession session = lm.CreateSession(tokens.Length + maxTokens);
        var logits = new float[lm.Config.VocabSize];
        PrefillReport report = await reuse.PrefillAsync(session, tokens, strategy, logits).ConfigureAwait(false);

        var generator = new TextGenerator(session, new SamplingOptions { MaxTokens = maxTokens });
        string answer = lm.Tokenizer.Decode([.. generator.Generate(tokens)]).Trim();

        AnsiConsole.MarkupLineInterpolated($"[bold yellow]{label}[/] ({report.Strategy}): lookup found {report.StoredChunks} of {tokens.Length / reuse.Options.ChunkTokens} chunks stored; restored {report.RestoredChunks} ({Variants(report)}), computed {report.ComputedTokens} tokens; fetched {report.BytesFetched / 1e6:F2} MB");
        AnsiConsole.Write(TimelineTable(report));
        AnsiConsole.MarkupLineInterpolated($"[bold]TTFT {Ms(report.TimeToFirstToken)}[/]  answer: [italic]{answer}[/]");
        AnsiConsole.WriteLine();
        return (report, answer);
    }

    /// <summary>Waits for the background publisher, with a progress bar.</summary>
    private static async Task PublishAsync(KvReuse reuse, ContextPlan plan)
    {
        long expected = (long)plan.Keys.Length * reuse.Publisher.Ladder.Count;
        await AnsiConsole.Progress().AutoClear(false).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .StartAsync(async context =>
            {
                ProgressTask task = context.AddTask($"storing {plan.Keys.Length} chunks x {reuse.Publisher.Ladder.Count} variants", maxValue: expected);
                Task idle = reuse.Publisher.WhenIdleAsync();
                while (!idle.IsCompleted)
                {
                    task.Value = reuse.Publisher.Published + reuse.Publisher.Failed;
                    await Task.WhenAny(idle, Task.Delay(100)).ConfigureAwait(false);
                }

                task.Value = expected;
            }).ConfigureAwait(false);
        AnsiConsole.MarkupLineInterpolated($"stored {reuse.Publisher.Published} containers, {reuse.Publisher.BytesStored / 1e6:F1} MB; {reuse.Publisher.Failed} failed{(reuse.Publisher.LastError is { } error ? $" (last: {error})" : "")}");
        AnsiConsole.WriteLine();
    }

    /// <summary>Each stage's span from its first start to its last end, its busy time, and a bar on a shared time axis.</summary>
    private static Table TimelineTable(PrefillReport report)
    {
        const int Width = 48;
        double total = Math.Max(report.TimeToFirstToken.TotalMilliseconds, 1e-3);
        var table = new Table().Border(TableBorder.Simple).AddColumns("stage", "spans", "busy", $"0 .. {Ms(report.TimeToFirstToken)}");
        foreach (PrefillStage stage in Enum.GetValues<PrefillStage>())
        {
            StageSpan[] spans = [.. report.Timeline.Where(s => s.Stage == stage)];
            if (spans.Length == 0)
            {
                continue;
            }

            var bar = new char[Width];
            Array.Fill(bar, '.');
            foreach (StageSpan span in spans)
            {
                int from = (int)Math.Clamp(span.Start.TotalMilliseconds / total * Width, 0, Width - 1);
                int to = (int)Math.Clamp(Math.Ceiling(span.End.TotalMilliseconds / total * Width), from + 1, Width);
                Array.Fill(bar, '#', from, to - from);
            }

            table.AddRow(stage.ToString().ToLowerInvariant(), spans.Length.ToString(CultureInfo.InvariantCulture), Ms(report.Total(stage)), new string(bar));
        }

        return table;
    }

    private static string Variants(PrefillReport report) =>
        report.Variants.Count == 0 ? "none" : string.Join(", ", report.Variants.Select(p => $"{p.Key} {p.Value}"));

    private static string Ms(TimeSpan time) => $"{time.TotalMilliseconds:F0} ms";
}
