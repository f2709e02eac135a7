using System.CommandLine;
using System.CommandLine.Invocation;
using KvFetcher.Cli.Commands;

namespace KvFetcher.Cli;

internal static class Program
{
    private static int Main(string[] args)
    {
        var root = new RootCommand("KvFetcher: reuse the KV cache of contexts seen before to answer faster.")
        {
            GenerateCommand.Create(),
            KeysCommand.Create(),
            InspectCommand.Create(),
            ServeCommand.Create(),
            ServeLlmCommand.Create(),
            DemoCommand.Create(),
            WarmCommand.Create(),
            BenchCommand.Create(),
            SecretCommand.Create(),
            CalibrateCommand.Create(),
        };
        root.Options.Add(CliOptions.Verbose);
        ParseResult parse = root.Parse(args);
        if (parse.Action is ParseErrorAction)
        {
            return CliOptions.UsageError(parse);
        }

        return parse.Invoke();
    }
}
