using System.CommandLine;
using KvFetcher.Core.Containers;

namespace KvFetcher.Cli.Commands;

/// <summary><c>kvfetch secret new FILE</c>: create a deployment secret for chunk authentication (docs/SECURITY.md).</summary>
internal static class SecretCommand
{
    public static Command Create()
    {
        Argument<FileInfo> file = new("file") { Description = "Where to write the secret (must not exist; created with mode 600)." };
        var create = new Command("new", "Write 32 random bytes, mode 600: the secret every engine sharing a store passes as --chunk-secret.") { file };
        create.SetAction(parse => CliOptions.Run(parse, () =>
        {
            string path = parse.GetValue(file)!.FullName;
            ChunkAuthenticator.CreateSecretFile(path);
            _ = ChunkAuthenticator.FromSecretFile(path);
            Console.Out.WriteLine($"kvfetch: wrote a new chunk secret to {path} (mode 600); give it to every engine that shares the store, never to the store.");
            return 0;
        }));
        return new Command("secret", "Deployment secrets that make the KV store untrusted (chunks sealed with a per-tenant MAC).") { create };
    }
}
