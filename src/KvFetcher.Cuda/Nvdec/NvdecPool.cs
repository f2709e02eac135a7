using System.Threading.Channels;

namespace KvFetcher.Cuda.Nvdec;

/// <summary>
/// Several NVDEC decode sessions working in parallel so that every NVDEC engine of the device is busy (an H100 has 7):
/// each session is an <see cref="NvdecDecoder"/> on its own thread, taking streams from one bounded queue. A failed
/// stream faults only its own task.
/// </summary>
public sealed class NvdecPool : IDisposable
{
    private readonly Channel<Job> _queue;
    private readonly NvdecDecoder[] _decoders;
    private readonly Thread[] _threads;
    private int _disposed;

    /// <summary>Starts <paramref name="sessions"/> decode sessions on <paramref name="device"/>.</summary>
    public NvdecPool(NvdecDevice device, int sessions, NvdecDecoderOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentOutOfRangeException.ThrowIfLessThan(sessions, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(sessions, 64);
        _queue = Channel.CreateBounded<Job>(new BoundedChannelOptions(sessions * 2) { SingleReader = false, SingleWriter = false });
        _decoders = new NvdecDecoder[sessions];
        _threads = new Thread[sessions];
        try
        {
            for (int i = 0; i < sessions; i++)
            {
                _decoders[i] = new NvdecDecoder(device, options);
            }
        }
        catch
        {
            foreach (NvdecDecoder? decoder in _decoders)
            {
                decoder?.Dispose();
            }

            throw;
        }

        for (int i = 0; i < sessions; i++)
        {
            NvdecDecoder decoder = _decoders[i];
            _threads[i] = new Thread(() => Work(decoder)) { IsBackground = true, Name = $"nvdec-{i}" };
            _threads[i].Start();
        }
    }

    /// <summary>The number of decode sessions.</summary>
    public int Sessions => _decoders.Length;

    /// <summary>Pictures decoded by all sessions.</summary>
    public long FramesDecoded => _decoders.Sum(d => d.FramesDecoded);

    /// <summary>Hardware decoders created by all sessions (one per session and geometry change).</summary>
    public int DecodersCreated => _decoders.Sum(d => d.DecodersCreated);

    /// <summary>Queues <paramref name="stream"/> for decoding into host <paramref name="planes"/> (see <see cref="NvdecDecoder.Decode"/>).</summary>
    public ValueTask<Task> EnqueueAsync(ReadOnlyMemory<byte> stream, NvdecStreamFormat format, Memory<byte> planes, CancellationToken cancellationToken = default)
    {
        format.Validate();
        if (planes.Length != format.OutputBytes)
        {
            throw new ArgumentException($"{format} decodes to {format.OutputBytes} bytes of planes, not {planes.Length}.", nameof(planes));
        }

        return EnqueueAsync(new Job(stream, format, planes, null, 0, cancellationToken), cancellationToken);
    }

    /// <summary>Queues <paramref name="stream"/> for decoding into GPU memory (see <see cref="NvdecDecoder.DecodeToDevice"/>).</summary>
    public ValueTask<Task> EnqueueAsync(ReadOnlyMemory<byte> stream, NvdecStreamFormat format, DeviceBuffer destination, long offset = 0, CancellationToken cancellationToken = default)
    {
        format.Validate();
        ArgumentNullException.ThrowIfNull(destination);
        return EnqueueAsync(new Job(stream, format, Memory<byte>.Empty, destination, offset, cancellationToken), cancellationToken);
    }

    /// <summary>Decodes <paramref name="stream"/> into host <paramref name="planes"/>; completes when the planes are written.</summary>
    public async Task DecodeAsync(ReadOnlyMemory<byte> stream, NvdecStreamFormat format, Memory<byte> planes, CancellationToken cancellationToken = default) =>
        await (await EnqueueAsync(stream, format, planes, cancellationToken)).ConfigureAwait(false);

    /// <summary>Decodes <paramref name="stream"/> into GPU memory; completes when the planes are written.</summary>
    public async Task DecodeToDeviceAsync(ReadOnlyMemory<byte> stream, NvdecStreamFormat format, DeviceBuffer destination, long offset = 0, CancellationToken cancellationToken = default) =>
        await (await EnqueueAsync(stream, format, destination, offset, cancellationToken)).ConfigureAwait(false);

    /// <summary>Finishes the queued streams, stops the sessions and frees their decoders.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _queue.Writer.TryComplete();
        foreach (Thread thread in _threads)
        {
            thread.Join();
        }

        foreach (NvdecDecoder decoder in _decoders)
        {
            decoder.Dispose();
        }
    }

    /// <summary>Waits for room in the queue; the returned task completes when a session has decoded the stream.</summary>
    private async ValueTask<Task> EnqueueAsync(Job job, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        await _queue.Writer.WriteAsync(job, cancellationToken).ConfigureAwait(false);
        return job.Completion.Task;
    }

    private void Work(NvdecDecoder decoder)
    {
        ChannelReader<Job> reader = _queue.Reader;
        while (reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
        {
            while (reader.TryRead(out Job? job))
            {
                if (job.CancellationToken.IsCancellationRequested)
                {
                    job.Completion.TrySetCanceled(job.CancellationToken);
                    continue;
                }

                try
                {
                    if (job.Device is null)
                    {
                        decoder.Decode(job.Stream.Span, job.Format, job.Planes.Span);
                    }
                    else
                    {
                        decoder.DecodeToDevice(job.Stream.Span, job.Format, job.Device, job.Offset);
                    }

                    job.Completion.TrySetResult();
                }
                catch (Exception ex)
                {
                    job.Completion.TrySetException(ex);
                }
            }
        }
    }

    private sealed record Job(ReadOnlyMemory<byte> Stream, NvdecStreamFormat Format, Memory<byte> Planes, DeviceBuffer? Device, long Offset, CancellationToken CancellationToken)
    {
        public TaskCompletionSource Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
