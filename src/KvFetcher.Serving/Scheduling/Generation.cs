using System.Threading.Channels;

namespace KvFetcher.Serving.Scheduling;

/// <summary>
/// A submitted request as its caller sees it: when its first token is ready (with what was reused), its text as it
/// is generated (for streaming requests) and the final result. Cancel the token given at submission to abandon it.
/// </summary>
public sealed class Generation
{
    private readonly TaskCompletionSource<PrefillInfo> _first = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<GenerationResult> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Channel<string> _text;

    internal Generation(bool stream)
    {
        _text = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        if (!stream)
        {
            _text.Writer.TryComplete();
        }
    }

    /// <summary>Completes when the first token has been chosen: how the prompt was obtained and the TTFT's parts.</summary>
    public Task<PrefillInfo> FirstToken => _first.Task;

    /// <summary>The generated text in pieces, in order (streaming requests only; completed at once otherwise).</summary>
    public ChannelReader<string> Text => _text.Reader;

    /// <summary>Completes with the result, or faults (cancelled, engine stopped, the request failed).</summary>
    public Task<GenerationResult> Completion => _done.Task;

    internal void PublishFirst(PrefillInfo info) => _first.TrySetResult(info);

    internal void PublishText(string piece)
    {
        if (piece.Length > 0)
        {
            _text.Writer.TryWrite(piece);
        }
    }

    internal void Complete(GenerationResult result)
    {
        _text.Writer.TryComplete();
        _first.TrySetResult(result.Prefill); // a request that failed over before its first token never gets here
        _done.TrySetResult(result);
    }

    internal void Fail(Exception exception)
    {
        _text.Writer.TryComplete(exception);
        if (exception is OperationCanceledException canceled)
        {
            _first.TrySetCanceled(canceled.CancellationToken);
            _done.TrySetCanceled(canceled.CancellationToken);
        }
        else
        {
            _first.TrySetException(exception);
            _done.TrySetException(exception);
        }
    }
}
