using System.Diagnostics;
using System.Globalization;
using System.Text;
using KvFetcher.Engine.Model;
using KvFetcher.Engine.Tokenization;

namespace KvFetcher.Bench;

/// <summary>
/// <c>kvfetch-bench tokenize</c>: seconds to tokenize texts of growing length with the bundled model's tokenizer,
/// for texts without a split point (one letter repeated, letters and digits mixed, punctuation, whitespace) and
/// for ordinary prose (the held-out documents, repeated), to show whether the cost grows linearly.
/// </summary>
internal static class TokenizeBenchmark
{
    public const string Usage =
        """
        usage: kvfetch-bench tokenize [--model DIR] [--lengths 80000,160000,...] [--kinds letters,prose,...]
                                      [--timeout-seconds S]
        Each (kind, length) runs once in the same process; a run that passes --timeout-seconds is abandoned and
        shown as '> S'. Kinds: letters (a repeated letter), word (random letters, no spaces), digits, punct,
        spaces, prose (data/heldout repeated).
        """;

    public static int Run(string[] args)
    {
        string model = BenchArgs.Option(args, "--model") ?? BenchArgs.BundledModel();
        int[] lengths = (BenchArgs.Option(args, "--lengths") ?? "80000,160000,320000,640000,7000000")
            .Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        string[] kinds = (BenchArgs.Option(args, "--kinds") ?? "letters,word,prose").Split(',');
        double timeout = double.Parse(BenchArgs.Option(args, "--timeout-seconds") ?? "120", CultureInfo.InvariantCulture);

        ModelConfig config = ModelConfig.Load(Path.Combine(model, "config.json"));
        TextTokenizer tokenizer = TextTokenizer.Load(model, config);
        string prose = LoadProse(lengths.Max());
        tokenizer.Encode(prose[..Math.Min(prose.Length, 20_000)]);

        Console.WriteLine($"model {Path.GetFileName(model)}, one run each, timeout {timeout:F0} s");
        Console.WriteLine($"{"kind",-8} {"chars",10} {"tokens",10} {"seconds",9} {"us/char",9}");
        foreach (string kind in kinds)
        {
            bool timedOut = false;
            foreach (int length in lengths)
            {
                if (timedOut)
                {
                    Console.WriteLine($"{kind,-8} {length,10} {"-",10} {"skipped",9}");
                    continue;
                }

                string text = Make(kind, length, prose);
                using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(timeout));
                long start = Stopwatch.GetTimestamp();
                var work = Task.Run(() => tokenizer.Encode(text, addSpecial: false));
                bool done = work.Wait(TimeSpan.FromSeconds(timeout));
                double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
                if (!done)
                {
                    Console.WriteLine($"{kind,-8} {length,10} {"-",10} {"> " + timeout.ToString("F0", CultureInfo.InvariantCulture),9}");
                    timedOut = true;
                    continue;
                }

                Console.WriteLine($"{kind,-8} {length,10} {work.Result.Length,10} {seconds,9:F3} {seconds * 1e6 / length,9:F3}");
            }
        }

        return 0;
    }

    private static string Make(string kind, int length, string prose)
    {
        switch (kind)
        {
            case "letters":
                return new string('a', length);
            case "digits":
                return new string('7', length);
            case "punct":
                return new string('=', length);
            case "spaces":
                return new string(' ', length);
            case "word":
                var random = new Random(12);
                var builder = new StringBuilder(length);
                for (int i = 0; i < length; i++)
                {
                    builder.Append((char)('a' + random.Next(26)));
                }

                return builder.ToString();
            case "prose":
                return prose[..length];
            default:
                throw new ArgumentException($"unknown kind '{kind}' (letters, word, digits, punct, spaces, prose).");
        }
    }

    private static string LoadProse(int length)
    {
        string folder = Path.Combine(BenchArgs.RepositoryRoot(), "data", "heldout");
        var builder = new StringBuilder(length + 100_000);
        string[] files = Directory.GetFiles(folder, "*.txt").Order(StringComparer.Ordinal).ToArray();
        if (files.Length == 0)
        {
            throw new ArgumentException($"no .txt documents in {folder}.");
        }

        while (builder.Length < length)
        {
            foreach (string file in files)
            {
                builder.Append(File.ReadAllText(file));
                if (builder.Length >= length)
                {
                    break;
                }
            }
        }

        return builder.ToString();
    }
}
