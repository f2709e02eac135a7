using System.Text;

namespace KvFetcher.Engine.Tokenization;

/// <summary>
/// Unicode canonical normalization (NFC and NFD) for tokenizers whose <c>normalizer</c> asks for it (Qwen2's
/// is NFC). <see cref="string.Normalize()"/> cannot be used: with invariant globalization, which this project
/// builds with, it leaves text unchanged. The tables come from the Unicode Character Database.
/// </summary>
internal static partial class UnicodeNormalizer
{
    private const int HangulSBase = 0xAC00;
    private const int HangulLBase = 0x1100;
    private const int HangulVBase = 0x1161;
    private const int HangulTBase = 0x11A7;
    private const int HangulLCount = 19;
    private const int HangulVCount = 21;
    private const int HangulTCount = 28;
    private const int HangulNCount = HangulVCount * HangulTCount;
    private const int HangulSCount = HangulLCount * HangulNCount;

    private static readonly Dictionary<long, int> s_compositions = BuildCompositions();

    /// <summary>Returns <paramref name="text"/> in form C or D.</summary>
    public static string Normalize(ReadOnlySpan<char> text, NormalizationForm form)
    {
        if (form is not (NormalizationForm.FormC or NormalizationForm.FormD))
        {
            throw new ArgumentOutOfRangeException(nameof(form), form, "Only NFC and NFD are supported.");
        }

        // Below U+0300 every character is a starter that no other character below U+0300 composes with, so such
        // text is already in NFC; below U+00C0 nothing decomposes either.
        int limit = form == NormalizationForm.FormC ? 0x300 : 0xC0;
        if (!HasCharAtOrAbove(text, limit))
        {
            return text.ToString();
        }

        var buffer = new List<int>(text.Length + 8);
        foreach (Rune rune in text.EnumerateRunes())
        {
            Decompose(rune.Value, buffer);
        }

        ReorderCombiningMarks(buffer);
        if (form == NormalizationForm.FormC)
        {
            Compose(buffer);
        }

        var builder = new StringBuilder(buffer.Count + 4);
        foreach (int codePoint in buffer)
        {
            builder.Append(new Rune(codePoint).ToString());
        }

        return builder.ToString();
    }

    private static bool HasCharAtOrAbove(ReadOnlySpan<char> text, int limit)
    {
        foreach (char c in text)
        {
            if (c >= limit)
            {
                return true;
            }
        }

        return false;
    }

    private static int CombiningClass(int codePoint)
    {
        if (codePoint < 0x300)
        {
            return 0;
        }

        ReadOnlySpan<int> table = CombiningClasses;
        int low = 0;
        int high = table.Length - 1;
        while (low <= high)
        {
            int middle = (low + high) >>> 1;
            int key = table[middle] >> 8;
            if (key == codePoint)
            {
                return table[middle] & 0xFF;
            }

            if (key < codePoint)
            {
                low = middle + 1;
            }
            else
            {
                high = middle - 1;
            }
        }

        return 0;
    }

    private static int FindDecomposition(int codePoint)
    {
        ReadOnlySpan<int> table = Decompositions;
        int low = 0;
        int high = (table.Length / 3) - 1;
        while (low <= high)
        {
            int middle = (low + high) >>> 1;
            int key = table[middle * 3];
            if (key == codePoint)
            {
                return middle * 3;
            }

            if (key < codePoint)
            {
                low = middle + 1;
            }
            else
            {
                high = middle - 1;
            }
        }

        return -1;
    }

    private static void Decompose(int codePoint, List<int> output)
    {
        int s = codePoint - HangulSBase;
        if (s is >= 0 and < HangulSCount)
        {
            output.Add(HangulLBase + (s / HangulNCount));
            output.Add(HangulVBase + (s % HangulNCount / HangulTCount));
            int t = s % HangulTCount;
            if (t != 0)
            {
                output.Add(HangulTBase + t);
            }

            return;
        }

        int index = codePoint < 0xC0 ? -1 : FindDecomposition(codePoint);
        if (index < 0)
        {
            output.Add(codePoint);
            return;
        }

        ReadOnlySpan<int> table = Decompositions;
        Decompose(table[index + 1], output);
        if (table[index + 2] >= 0)
        {
            Decompose(table[index + 2], output);
        }
    }

    // Canonical ordering: a stable sort of each run of non-starters by combining class. Short runs (the usual
    // one or two marks) are insertion-sorted; a longer run is sorted by (class, index), so an adversarial run of
    // alternating classes costs O(k log k) rather than O(k^2).
    private static void ReorderCombiningMarks(List<int> buffer)
    {
        const int InsertionSortLimit = 16;
        int i = 0;
        while (i < buffer.Count)
        {
            if (CombiningClass(buffer[i]) == 0)
            {
                i++;
                continue;
            }

            int start = i;
            while (i < buffer.Count && CombiningClass(buffer[i]) != 0)
            {
                i++;
            }

            if (i - start <= InsertionSortLimit)
            {
                InsertionSort(buffer, start, i);
            }
            else
            {
                KeySort(buffer, start, i);
            }
        }
    }

    private static void InsertionSort(List<int> buffer, int start, int end)
    {
        for (int i = start + 1; i < end; i++)
        {
            int current = buffer[i];
            int currentClass = CombiningClass(current);
            int j = i;
            while (j > start && CombiningClass(buffer[j - 1]) > currentClass)
            {
                buffer[j] = buffer[j - 1];
                j--;
            }

            buffer[j] = current;
        }
    }

    private static void KeySort(List<int> buffer, int start, int end)
    {
        // Key: class << 42 | index in the run << 21 | code point (code points take 21 bits); ordering by the key
        // is ordering by class, stable.
        long[] keys = new long[end - start];
        for (int i = start; i < end; i++)
        {
            keys[i - start] = ((long)CombiningClass(buffer[i]) << 42) | ((long)(i - start) << 21) | (uint)buffer[i];
        }

        Array.Sort(keys);
        for (int i = start; i < end; i++)
        {
            buffer[i] = (int)(keys[i - start] & 0x1F_FFFF);
        }
    }

    // The canonical composition algorithm: each character joins the last starter unless a character of the same
    // or a higher class stands between them.
    private static void Compose(List<int> buffer)
    {
        if (buffer.Count == 0)
        {
            return;
        }

        int starterIndex = 0;
        int starter = buffer[0];
        int lastClass = CombiningClass(starter) == 0 ? 0 : 256;
        int write = 1;
        for (int read = 1; read < buffer.Count; read++)
        {
            int c = buffer[read];
            int cClass = CombiningClass(c);
            if ((lastClass < cClass || lastClass == 0) && TryCompose(starter, c, out int composite))
            {
                buffer[starterIndex] = composite;
                starter = composite;
                continue;
            }

            if (cClass == 0)
            {
                starterIndex = write;
                starter = c;
            }

            lastClass = cClass;
            buffer[write++] = c;
        }

        buffer.RemoveRange(write, buffer.Count - write);
    }

    private static bool TryCompose(int first, int second, out int composite)
    {
        int l = first - HangulLBase;
        if (l is >= 0 and < HangulLCount)
        {
            int v = second - HangulVBase;
            if (v is >= 0 and < HangulVCount)
            {
                composite = HangulSBase + (((l * HangulVCount) + v) * HangulTCount);
                return true;
            }
        }

        int s = first - HangulSBase;
        if (s is >= 0 and < HangulSCount && s % HangulTCount == 0)
        {
            int t = second - HangulTBase;
            if (t is > 0 and < HangulTCount)
            {
                composite = first + t;
                return true;
            }
        }

        return s_compositions.TryGetValue(((long)first << 21) | (uint)second, out composite);
    }

    private static Dictionary<long, int> BuildCompositions()
    {
        ReadOnlySpan<int> table = Decompositions;
        ReadOnlySpan<int> exclusions = CompositionExclusions;
        var result = new Dictionary<long, int>(1024);
        for (int i = 0; i < table.Length; i += 3)
        {
            if (table[i + 2] < 0 || exclusions.BinarySearch(table[i]) >= 0)
            {
                continue;
            }

            result.Add(((long)table[i + 1] << 21) | (uint)table[i + 2], table[i]);
        }

        return result;
    }
}
