using KvFetcher.Codecs;

namespace KvFetcher.Fetch.Publishing;

/// <summary>The part of a ladder this process can encode and decode: variants whose codec is unavailable are left out.</summary>
public static class UsableLadder
{
    /// <summary>
    /// The variants of <paramref name="ladder"/> whose codec can run here, in order; <paramref name="warning"/> is one line
    /// naming the variants left out and why (null when none was). Every variant may be left out: the caller decides.
    /// </summary>
    public static IReadOnlyList<KvVariant> Of(IReadOnlyList<KvVariant> ladder, out string? warning)
    {
        ArgumentNullException.ThrowIfNull(ladder);
        List<KvVariant>? usable = null;
        List<string>? reasons = null;
        var dropped = new List<KvVariant>();
        for (int i = 0; i < ladder.Count; i++)
        {
            IKvCodec codec = ladder[i].GetCodec();
            if (codec.Unavailable is not { } reason)
            {
                usable?.Add(ladder[i]);
                continue;
            }

            usable ??= [.. ladder.Take(i)];
            dropped.Add(ladder[i]);
            reasons ??= [];
            string line = $"{codec.Name}: {reason.ReplaceLineEndings(" ").Trim()}";
            if (!reasons.Contains(line))
            {
                reasons.Add(line);
            }
        }

        if (usable is null)
        {
            warning = null;
            return ladder;
        }

        warning = $"left out of the ladder, since their codec cannot run here: {string.Join(", ", dropped)} ({string.Join("; ", reasons!)})";
        return usable;
    }
}
