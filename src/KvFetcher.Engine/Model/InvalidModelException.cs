using KvFetcher.Core;

namespace KvFetcher.Engine.Model;

/// <summary>
/// Thrown when a model directory or one of its files (<c>config.json</c>, <c>*.safetensors</c>, the shard index,
/// <c>tokenizer.json</c>, <c>tokenizer_config.json</c>) is missing, malformed or inconsistent. The message starts with
/// the file's path and names the field, offset or value that is wrong.
/// </summary>
public sealed class InvalidModelException : InvalidKvDataException
{
    public InvalidModelException()
    {
        FilePath = string.Empty;
    }

    public InvalidModelException(string message)
        : base(message)
    {
        FilePath = string.Empty;
    }

    public InvalidModelException(string message, Exception innerException)
        : base(message, innerException)
    {
        FilePath = string.Empty;
    }

    /// <summary>Creates the exception for <paramref name="filePath"/>; the message reads "<c>path: problem</c>".</summary>
    public InvalidModelException(string filePath, string problem, Exception? innerException = null)
        : base($"{filePath}: {problem}", innerException!)
    {
        FilePath = filePath;
    }

    /// <summary>The file (or directory) that is missing or wrong.</summary>
    public string FilePath { get; }
}
