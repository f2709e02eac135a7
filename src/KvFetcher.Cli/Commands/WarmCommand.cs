using System.CommandLine;
using KvFetcher.Runtime;
using KvFetcher.Engine;
using KvFetcher.Fetch;
using KvFetcher.Fetch.Scheduling;
using KvFetcher.Store;
using Spectre.Console;

namespace KvFetcher.Cli.Commands;

/// <summary><c>kvfetch warm --file F --store S</c>: compute a context once and store its chunks, so later prompts starting with it reuse them.</summary>
internal static class WarmCommand
{
    public static Command Create()
    {
        Option<string?> model = CliOptions.Model();
        Option<FileInfo> file = new("--file", "-f") { Description = "The context to store.", Required = true };
        Option<string> store = new("--store") { Description = "Store: a directory, http(s)://host:port (token in $KVFETCH_TOKEN) or redis://host:port[,host:port].", Required = true };
        Option<string> tenant = new("--tenant") { Description = "Tenant salt: only requests with the same salt reuse these chunks.", DefaultValueFactory = _ => "" };
        Option<string?> ladder = new("--ladder") { Description = "Variants to store per chunk, e.g. raw,exact,video8,video4 (default: the reuse default)." };
        Option<int> threads = new("--threads") { Description = "Kernel threads (0: one per processor).", DefaultValueFactory = _ => 0 };
        Option<EngineKind> engine = CliOptions.Engine();
        Option<FileInfo?> chunkSecret = CliOptions.ChunkSecret();
        var command = new Command("warm", "Compute a context and store its KV chunks.") { model, file, store, tenant, ladder, threads, engine, chunkSecret };
        command.SetAction(parse => CliOptions.Run(parse, () =>
        {
            var options = new ReuseOptions { TenantSalt = parse.GetValue(tenant)!, Authenticator = CliOptions.OpenChunkSecret(parse.GetValue(chunkSecret)) };
            using LocalEngine local = CliOptions.OpenEngine(parse.GetValue(model), parse.GetValue(engine), parse.GetValue(threads));
            if (parse.GetValue(ladder) is { } variants)
            {
                options = options with { Ladder = [.. variants.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(KvVariant.Parse)] };
            }

            return RunAsync(local.Model, File.ReadAllText(parse.GetValue(file)!.FullName), parse.GetValue(store)!, options).GetAwaiter().GetResult();
        }));
        return command;
    }

    private static async Task<int> RunAsync(IInferenceModel lm, string text, string location, ReuseOptions options)
    {
        int[] tokens = lm.Tokenizer.Encode(text);
        if (tokens.Length > lm.Config.MaxPositionEmbeddings)
        {
            throw new ArgumentException($"The context has {tokens.Length} tokens; {Path.GetFileName(lm.Directory)} takes at most {lm.Config.MaxPositionEmbeddings}.");
        }

        IKvStore store = await KvStores.OpenAsync(location).ConfigureAwait(false);
        if (await KvStores.CheckAsync(store).ConfigureAwait(false) is { } problem)
        {
            AnsiConsole.MarkupLineInterpolated($"[yellow]store unreachable, nothing will be stored: {problem}[/]");
        }

        await using (store.ConfigureAwait(false))
        {
            await using var reuse = new KvReuse(lm, store, options);
            if (reuse.LadderWarning is { } warning)
            {
                Console.Error.WriteLine($"kvfetch: warning: {warning}");
            }

            PrefillReport report = await reuse.WarmAsync(tokens).ConfigureAwait(false);
            AnsiConsole.MarkupLineInterpolated($"{tokens.Length} tokens, {tokens.Length / options.ChunkTokens} full chunks ({report.StoredChunks} were stored already); stored {reuse.Publisher.Published} containers ({reuse.Publisher.BytesStored / 1e6:F1} MB) as {string.Join(", ", reuse.Publisher.Ladder)} in {store.Description}; {reuse.Publisher.Failed} failed");
            if (reuse.Publisher.Failed > 0)
            {
                // One error line with the reason (a store that wants a token says so, and how to give it).
                throw new InvalidOperationException($"{reuse.Publisher.Failed} containers were not stored; the last failure: {reuse.Publisher.LastError}");
            }

            return 0;
        }
    }
}
