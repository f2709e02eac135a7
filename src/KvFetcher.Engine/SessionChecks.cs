namespace KvFetcher.Engine;

/// <summary>The argument checks every session's forward step makes, whichever engine runs it.</summary>
internal static class SessionChecks
{
    /// <summary>
    /// Throws unless <paramref name="tokens"/> is non-empty, positions [0, <paramref name="startPosition"/>) of
    /// <paramref name="cache"/> are filled, the step fits the cache, and the logits buffer holds what the step writes.
    /// </summary>
    public static void Step(IKvCache cache, ReadOnlySpan<int> tokens, int startPosition, long logitsLength, long logitsNeeded)
    {
        if (tokens.IsEmpty)
        {
            throw new ArgumentException("At least one token is needed.", nameof(tokens));
        }

        ArgumentOutOfRangeException.ThrowIfNegative(startPosition);
        if (cache.Length < startPosition)
        {
            throw new InvalidOperationException($"Prefill at position {startPosition} needs positions [0, {startPosition}) in the KV cache; only [0, {cache.Length}) are filled.");
        }

        if (startPosition + tokens.Length > cache.Capacity)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens.Length, $"Positions [{startPosition}, {startPosition + tokens.Length}) exceed the KV cache capacity of {cache.Capacity} tokens.");
        }

        if (logitsLength < logitsNeeded)
        {
            throw new ArgumentException($"The logits buffer holds {logitsLength} values; {logitsNeeded} are needed.", nameof(logitsLength));
        }
    }
}
