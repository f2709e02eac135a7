namespace KvFetcher.Core.Containers;

/// <summary>
/// A container whose checksum holds but whose MAC tag is missing or does not verify under the reader's
/// <see cref="ChunkMacKey"/>: forged, another tenant's, or sealed under another deployment secret (e.g. before a
/// rotation). Unlike a checksum failure this is not evidence of a damaged transfer, so the reader replaces the object.
/// </summary>
public sealed class ChunkAuthenticationException : InvalidKvDataException
{
    public ChunkAuthenticationException()
    {
    }

    public ChunkAuthenticationException(string message)
        : base(message)
    {
    }

    public ChunkAuthenticationException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
