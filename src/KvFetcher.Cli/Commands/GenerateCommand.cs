using System.CommandLine;
using KvFetcher.Engine;
using KvFetcher.Engine.Generation;
using KvFetcher.Engine.Tokenization;
using Spectre.Console;

namespace KvFetcher.Cli.Commands;

/// <summary><c>kvfetch generate</c>: stream a model's answer to a prompt and report prefill, TTFT and decode speed.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        Option<string?> model = CliOptions.Model();
        Option<string?> prompt = new("--prompt", "-p") { Description = "The prompt text." };
        Option<FileInfo?> file = new("--file", "-f") { Description = "Read the prompt from this file." };
        Option<int> maxTokens = new Option<int>("--max-tokens", "-n") { Description = "Most tokens to generate.", DefaultValueFactory = _ => 128 }.AtLeast(1);
        Option<float> temperature = new("--temperature", "-t") { Description = "0 for greedy decoding.", DefaultValueFactory = _ => 0f };
        Option<float> topP = new("--top-p") { Description = "Nucleus sampling mass.", DefaultValueFactory = _ => 1f };
        Option<int?> seed = new("--seed") { Description = "Seed for sampling." };
        Option<int> threads = new Option<int>("--threads") { Description = "Kernel threads (0: one per processor).", DefaultValueFactory = _ => 0 }.AtLeast(0);

        var command = new Command("generate", "Generate text from a prompt with a local model.")
        {
            model, prompt, file, maxTokens, temperature, topP, seed, threads,
        };
        command.Validators.Add(result =>
        {
            if ((result.GetValue(prompt) is null) == (result.GetValue(file) is null))
            {
                result.AddError("Give exactly one of --prompt or --file.");
            }
        });
        command.SetAction(parse => CliOptions.Run(parse, () =>
        {
            string text = parse.GetValue(prompt) ?? File.ReadAllText(parse.GetValue(file)!.FullName);
            var sampling = new SamplingOptions
            {
                MaxTokens = parse.GetValue(maxTokens),
                Temperature = parse.GetValue(temperature),
                TopP = parse.GetValue(topP),
                Seed = parse.GetValue(seed),
            };
            using LanguageModel lm = LanguageModel.Open(CliOptions.ResolveModel(parse.GetValue(model)), new LanguageModelOptions { Threads = parse.GetValue(threads) });
            return Generate(lm, text, sampling);
        }));
        return command;
    }

    private static int Generate(LanguageModel lm, string text, SamplingOptions sampling)
    {
        int[] tokens = lm.Tokenizer.Encode(text);
        InferenceSession session = lm.CreateSession(Math.Min(lm.Config.MaxPositionEmbeddings, tokens.Length + sampling.MaxTokens));
        var generator = new TextGenerator(session, sampling);
        TokenStreamDecoder decoder = lm.Tokenizer.CreateStreamDecoder();

        AnsiConsole.MarkupLineInterpolated($"[grey]{Path.GetFileName(lm.Directory)}: {tokens.Length} prompt tokens, {lm.Threads} threads[/]");
        Console.Out.Write(text);
        foreach (int token in generator.Generate(tokens))
        {
            Console.Out.Write(decoder.Append(token));
            Console.Out.Flush();
        }

        Console.Out.WriteLine(decoder.Flush());
        GenerationStats stats = generator.Stats!;
        var table = new Table().Border(TableBorder.Rounded).AddColumns("prefill", "TTFT", "decode");
        table.AddRow(
            $"{stats.PromptTokens - stats.ReusedTokens} tok, {stats.PrefillTokensPerSecond:F0} tok/s",
            $"{stats.TimeToFirstToken.TotalMilliseconds:F0} ms",
            $"{stats.DecodeTokens} tok, {stats.DecodeTokensPerSecond:F1} tok/s");
        AnsiConsole.Write(table);
        return 0;
    }
}
