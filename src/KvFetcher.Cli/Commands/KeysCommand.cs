using System.CommandLine;
using KvFetcher.Core.Keys;
using KvFetcher.Engine;

namespace KvFetcher.Cli.Commands;

/// <summary><c>kvfetch keys</c>: print the chunk keys of a text under a model and tenant (what a store is asked for).</summary>
internal static class KeysCommand
{
    public static Command Create()
    {
        Option<string?> model = CliOptions.Model();
        Option<FileInfo> file = new("--file", "-f") { Description = "The context text.", Required = true };
        Option<string> tenant = new("--tenant") { Description = "Tenant salt.", DefaultValueFactory = _ => "" };
        Option<int> chunkSize = new("--chunk-size") { Description = "Tokens per chunk.", DefaultValueFactory = _ => 256 };
        var command = new Command("keys", "Print the model fingerprint and the chunk keys of a text.") { model, file, tenant, chunkSize };
        command.SetAction(parse => CliOptions.Run(parse, () =>
        {
            int size = parse.GetValue(chunkSize);
            if (size < 1)
            {
                throw new ArgumentException($"--chunk-size must be at least 1; got {size}.");
            }

            using LanguageModel lm = LanguageModel.Open(CliOptions.ResolveModel(parse.GetValue(model)));
            int[] tokens = lm.Tokenizer.Encode(File.ReadAllText(parse.GetValue(file)!.FullName));
            Console.Out.WriteLine($"model {lm.Fingerprint}");
            ChunkKey[] keys = ChunkKey.ComputeChain(lm.Fingerprint, parse.GetValue(tenant)!, tokens, size);
            for (int i = 0; i < keys.Length; i++)
            {
                Console.Out.WriteLine($"chunk {i} tokens [{i * size}, {(i + 1) * size}) {keys[i]}");
            }

            return 0;
        }));
        return command;
    }
}
