using System.Globalization;

namespace KvFetcher.NvdecBench;

/// <summary>Option parsing shared by the commands.</summary>
internal static class Args
{
    public static string? Option(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    public static int Int(string[] args, string name, int fallback) =>
        Option(args, name) is { } text ? int.Parse(text, CultureInfo.InvariantCulture) : fallback;

    public static double Double(string[] args, string name, double fallback) =>
        Option(args, name) is { } text ? double.Parse(text, CultureInfo.InvariantCulture) : fallback;

    public static int[] Ints(string[] args, string name, int[] fallback) =>
        Option(args, name) is { } text ? text.Split(',').Select(t => int.Parse(t, CultureInfo.InvariantCulture)).ToArray() : fallback;
}
