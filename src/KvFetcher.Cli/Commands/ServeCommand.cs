using System.CommandLine;
using System.Globalization;
using KvFetcher.Server;
using KvFetcher.Store;

namespace KvFetcher.Cli.Commands;

/// <summary><c>kvfetch serve</c>: run the network KV store over a data directory until Ctrl+C or SIGTERM.</summary>
internal static class ServeCommand
{
    public const string TokenVariable = "KVFETCH_TOKEN";

    public static Command Create()
    {
        Option<DirectoryInfo> data = new("--data") { Description = "Directory holding the objects (created when missing).", Required = true };
        Option<FileInfo?> tokenFile = new("--token-file") { Description = $"File holding the bearer token clients must send (else ${TokenVariable})." };
        Option<string[]> urls = new("--urls")
        {
            Description = "Where to listen, repeatable: http(s)://IP:PORT, localhost or * (port 0 = any free port).",
            DefaultValueFactory = _ => ["http://127.0.0.1:7070"],
            AllowMultipleArgumentsPerToken = true,
        };
        Option<FileInfo?> cert = new("--cert") { Description = "PEM certificate for https URLs." };
        Option<FileInfo?> certKey = new("--cert-key") { Description = "PEM private key of --cert." };
        Option<string?> capacity = new("--capacity") { Description = "Most bytes to keep, least recently used evicted first: e.g. 500MB, 10GB, 2GiB." };
        Option<bool> allowAnonymous = new("--allow-anonymous") { Description = "Serve without a token (refused unless every URL is loopback)." };
        Option<bool> publicMetrics = new("--public-metrics") { Description = "Serve /metrics without the token (every other route but /healthz needs it)." };
        var command = new Command("serve", "Run the KV store server.") { data, tokenFile, urls, cert, certKey, capacity, allowAnonymous, publicMetrics };
        command.SetAction(parse => CliOptions.Run(parse, () =>
        {
            var options = new StoreServerOptions
            {
                DataDirectory = parse.GetValue(data)!.FullName,
                Token = ReadToken(parse.GetValue(tokenFile)),
                AllowAnonymous = parse.GetValue(allowAnonymous),
                PublicMetrics = parse.GetValue(publicMetrics),
                Urls = parse.GetValue(urls)!,
                CertificateFile = parse.GetValue(cert)?.FullName,
                CertificateKeyFile = parse.GetValue(certKey)?.FullName,
                CapacityBytes = parse.GetValue(capacity) is { } size ? ParseSize(size) : null,
            };
            try
            {
                return ServeAsync(options).GetAwaiter().GetResult();
            }
            catch (KvStoreException ex)
            {
                // The store could not be opened (directory unusable or held by another server): one line, exit 1.
                throw new IOException(ex.Message, ex);
            }
        }));
        return command;
    }

    private static async Task<int> ServeAsync(StoreServerOptions options)
    {
        using var stop = new StopSignal();
        await using StoreServer server = await StoreServer.StartAsync(options);
        foreach (Uri address in server.Addresses)
        {
            Console.Out.WriteLine($"listening on {address}");
        }

        Console.Out.WriteLine($"serving {options.DataDirectory}; Ctrl+C stops");
        await stop.Task;
        Console.Error.WriteLine("kvfetch: stopping (finishing requests in flight)");
        await server.StopAsync();
        return 0;
    }

    /// <summary>The token from <paramref name="file"/> (surrounding whitespace trimmed), else from $KVFETCH_TOKEN.</summary>
    private static string? ReadToken(FileInfo? file)
    {
        if (file is not null)
        {
            string token = File.ReadAllText(file.FullName).Trim();
            return token.Length > 0 ? token : throw new ArgumentException($"The token file '{file.FullName}' is empty.");
        }

        string? fromEnvironment = Environment.GetEnvironmentVariable(TokenVariable);
        return string.IsNullOrWhiteSpace(fromEnvironment) ? null : fromEnvironment.Trim();
    }

    /// <summary>Parses <c>123</c>, <c>500MB</c>, <c>10GB</c> (powers of 1000) or <c>2GiB</c> (powers of 1024) into bytes.</summary>
    internal static long ParseSize(string text)
    {
        (string Suffix, long Scale)[] units =
        [
            ("KiB", 1L << 10), ("MiB", 1L << 20), ("GiB", 1L << 30), ("TiB", 1L << 40),
            ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("TB", 1_000_000_000_000), ("B", 1), ("", 1),
        ];
        string trimmed = text.Trim();
        foreach ((string suffix, long scale) in units)
        {
            if (trimmed.EndsWith(suffix, StringComparison.OrdinalIgnoreCase)
                && double.TryParse(trimmed.AsSpan(0, trimmed.Length - suffix.Length), NumberStyles.Float, CultureInfo.InvariantCulture, out double value)
                && value > 0 && value * scale < long.MaxValue)
            {
                return (long)(value * scale);
            }
        }

        throw new ArgumentException($"--capacity '{text}' is not a size such as 500MB, 10GB or 2GiB.");
    }
}
