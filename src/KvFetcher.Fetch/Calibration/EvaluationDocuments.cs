using KvFetcher.Engine.Tokenization;

namespace KvFetcher.Fetch.Calibration;

/// <summary>A document tokenized for an accuracy measurement: its file and its token ids.</summary>
public sealed record EvaluationDocument(string Path, int[] Tokens);

/// <summary>Text documents for accuracy measurements, read from files and folders of <c>*.txt</c> files.</summary>
public static class EvaluationDocuments
{
    /// <summary>
    /// Tokenizes the <c>*.txt</c> files of <paramref name="sources"/> (folders, in ordinal order of file names, or
    /// single files), keeping those with at least <paramref name="tokensNeeded"/> tokens, at most
    /// <paramref name="maxDocuments"/> of them, taken in turn from each source so that every kind of text is present.
    /// </summary>
    public static IReadOnlyList<EvaluationDocument> Load(TextTokenizer tokenizer, IReadOnlyList<string> sources, int tokensNeeded, int maxDocuments)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(sources);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxDocuments, 1);
        var queues = new List<Queue<string>>();
        foreach (string source in sources)
        {
            if (Directory.Exists(source))
            {
                queues.Add(new Queue<string>(Directory.GetFiles(source, "*.txt").Order(StringComparer.Ordinal)));
            }
            else if (File.Exists(source))
            {
                queues.Add(new Queue<string>([source]));
            }
            else
            {
                throw new FileNotFoundException($"No document or folder of documents at '{source}'.", source);
            }
        }

        var documents = new List<EvaluationDocument>();
        while (documents.Count < maxDocuments && queues.Any(q => q.Count > 0))
        {
            foreach (Queue<string> queue in queues)
            {
                while (documents.Count < maxDocuments && queue.TryDequeue(out string? path))
                {
                    int[] ids = tokenizer.Encode(File.ReadAllText(path));
                    if (ids.Length >= tokensNeeded)
                    {
                        documents.Add(new EvaluationDocument(path, ids));
                        break;
                    }
                }
            }
        }

        return documents;
    }

    /// <summary>
    /// The held-out documents of the checkout that holds <paramref name="from"/> (or a folder above it): <c>data/heldout</c>
    /// (prose) and <c>data/heldout-code</c> (code) where present; empty when no checkout is found.
    /// </summary>
    public static IReadOnlyList<string> FindHeldOut(string from)
    {
        for (DirectoryInfo? dir = new(from); dir is not null; dir = dir.Parent)
        {
            string prose = System.IO.Path.Combine(dir.FullName, "data", "heldout");
            if (Directory.Exists(prose))
            {
                string code = System.IO.Path.Combine(dir.FullName, "data", "heldout-code");
                return Directory.Exists(code) ? [prose, code] : [prose];
            }
        }

        return [];
    }
}
