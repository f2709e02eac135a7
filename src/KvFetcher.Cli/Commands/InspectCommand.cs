using System.CommandLine;
using KvFetcher.Codecs;
using KvFetcher.Core;
using KvFetcher.Core.Containers;

namespace KvFetcher.Cli.Commands;

/// <summary><c>kvfetch inspect FILE</c>: print a chunk container's header, verify its checksum and decode it.</summary>
internal static class InspectCommand
{
    public static Command Create()
    {
        Argument<FileInfo> file = new("FILE") { Description = "A KV chunk container." };
        var command = new Command("inspect", "Print a KV chunk container's header and verify it.") { file };
        command.SetAction(parse => CliOptions.Run(parse, () =>
        {
            byte[] bytes = File.ReadAllBytes(parse.GetValue(file)!.FullName);
            ChunkHeader header = ChunkContainer.Read(bytes, out ReadOnlySpan<byte> parameters, out ReadOnlySpan<byte> payload);
            Console.Out.WriteLine(header.LayerGroup > 0
                ? $"container   {bytes.Length} bytes, version {ChunkContainer.LayeredVersion} (layer-addressable, {header.LayerGroup} layer(s) per group), checksum and layer table ok"
                : $"container   {bytes.Length} bytes, version {ChunkContainer.Version}, checksum ok");
            Console.Out.WriteLine($"codec       {header.Codec.ToString().ToLowerInvariant()} level {header.Level}");
            Console.Out.WriteLine($"dtype       {header.DType.ToShortName()}");
            Console.Out.WriteLine($"key         {header.Key}");
            Console.Out.WriteLine($"model       {header.Model}");
            Console.Out.WriteLine($"tokens      [{header.TokenStart}, {header.TokenStart + header.Shape.Tokens})");
            Console.Out.WriteLine($"shape       {header.Shape}");
            Console.Out.WriteLine($"mac         {(header.Authenticated ? "authenticated (HMAC-SHA256 tag; only engines with the deployment secret can check it)" : "none (trusted store)")}");
            long raw = header.Shape.Elements * header.DType.SizeOf();
            Console.Out.WriteLine($"parameters  {parameters.Length} bytes");
            Console.Out.WriteLine($"payload     {payload.Length} bytes ({(double)raw / Math.Max(1, payload.Length + parameters.Length):F2}x smaller than {raw} raw bytes)");
            IKvCodec codec = KvCodecs.Get(header.Codec);
            var decoded = new byte[raw];
            codec.Decode(parameters, payload, header.Shape, header.DType, header.TokenStart, header.Level, decoded);
            Console.Out.WriteLine("decode      ok");
            return 0;
        }));
        return command;
    }
}
