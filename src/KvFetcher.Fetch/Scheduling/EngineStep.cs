namespace KvFetcher.Fetch.Scheduling;

/// <summary>What an engine step on a reuse request is (see <see cref="EngineStep"/>).</summary>
public enum EngineStepKind
{
    /// <summary>Compute prompt tokens [<see cref="EngineStep.Start"/>, +<see cref="EngineStep.Count"/>).</summary>
    Compute,

    /// <summary>The chunk in front of the engine is the fetcher's: wait for the board to change (or <see cref="EngineStep.Recheck"/>).</summary>
    Wait,

    /// <summary>The whole prompt is in the cache; the last step's logits are the first token's.</summary>
    Done,

    /// <summary>
    /// Compute prompt tokens [<see cref="EngineStep.Start"/>, +<see cref="EngineStep.Count"/>) through the lower
    /// <see cref="EngineStep.Layers"/> layers only (<see cref="Engine.IInferenceSession.PrefillLowerLayers"/>): the fetcher
    /// brings their upper layers. Report it with <c>Computed</c> like any compute step.
    /// </summary>
    ComputeLower,
}

/// <summary>
/// The engine's next move on one reuse request, from the request's strategy and chunk board: a range of the prompt to
/// compute, a wait for the fetcher, or done. An engine loop takes these steps between other requests' steps.
/// </summary>
public readonly record struct EngineStep(EngineStepKind Kind, int Start, int Count, TimeSpan Recheck)
{
    public static EngineStep Done { get; } = new(EngineStepKind.Done, 0, 0, TimeSpan.Zero);

    public static EngineStep Compute(int start, int count) => new(EngineStepKind.Compute, start, count, TimeSpan.Zero);

    /// <summary>Compute [start, start + count) through the lower <paramref name="layers"/> layers only.</summary>
    public static EngineStep ComputeLower(int start, int count, int layers) => new(EngineStepKind.ComputeLower, start, count, TimeSpan.Zero) { Layers = layers };

    /// <summary>For <see cref="EngineStepKind.ComputeLower"/>: how many lower layers; 0 otherwise.</summary>
    public int Layers { get; init; }

    /// <summary>Wait for the next change of the board, or at most <paramref name="recheck"/> (<see cref="Timeout.InfiniteTimeSpan"/>: only a change).</summary>
    public static EngineStep Waiting(TimeSpan recheck) => new(EngineStepKind.Wait, 0, 0, recheck);
}
