namespace KvFetcher.Core;

/// <summary>
/// Thrown when bytes that claim to hold model or KV data (a model file, a chunk container, a wire message) are
/// malformed, truncated, corrupt or do not match what the caller expects. The message names the source, the
/// field and the offending value.
/// </summary>
public class InvalidKvDataException : Exception
{
    public InvalidKvDataException()
    {
    }

    public InvalidKvDataException(string message)
        : base(message)
    {
    }

    public InvalidKvDataException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
