namespace KvFetcher.Store;

/// <summary>A store is unreachable, failing, too slow or refused an operation. Callers treat it as a miss.</summary>
public class KvStoreException : Exception
{
    public KvStoreException()
    {
    }

    public KvStoreException(string message)
        : base(message)
    {
    }

    public KvStoreException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>An object cannot be stored: it is larger than the store's capacity, or nothing can be evicted for it.</summary>
public class KvStoreFullException : KvStoreException
{
    public KvStoreFullException()
    {
    }

    public KvStoreFullException(string message)
        : base(message)
    {
    }

    public KvStoreFullException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// A store is known to be unavailable (its circuit breaker is open after consecutive failures): the call was refused at
/// once without reaching it. Callers treat it as a miss.
/// </summary>
public class KvStoreUnavailableException : KvStoreException
{
    public KvStoreUnavailableException()
    {
    }

    public KvStoreUnavailableException(string message)
        : base(message)
    {
    }

    public KvStoreUnavailableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
