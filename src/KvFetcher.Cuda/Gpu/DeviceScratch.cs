using KvFetcher.Core;
using KvFetcher.Engine.Model;

namespace KvFetcher.Cuda.Gpu;

/// <summary>
/// One session's device state besides its cache: a stream and cuBLAS handle, the activations of a forward step of up
/// to <see cref="MaxTokens"/> tokens, the attention split states, the rotary table and pinned transfer buffers.
/// </summary>
internal sealed class DeviceScratch : IDisposable
{
    /// <summary>Split states the buffer holds per query of <see cref="PartialQueries"/> (more for fewer queries).</summary>
    public const int MaxSplits = 16;

    /// <summary>Attention blocks per multiprocessor below which a launch splits the key range.</summary>
    public const int SplitTargetBlocksPerSm = 4;

    private readonly List<IDisposable> _owned = [];
    private readonly CudaContext _context;

    public DeviceScratch(CudaContext context, ModelConfig config, DType matmulType, CudaMatmulPrecision precision, bool splitActivations, int maxTokens, int logitRows)
    {
        _context = context;
        MaxTokens = maxTokens;
        LogitRows = logitRows;
        try
        {
            Stream = Own(context.CreateStream());
            Blas = Own(new Blas(context, Stream, matmulType, precision));
            int d = config.HiddenSize;
            int act = matmulType.SizeOf();
            int qkvWidth = config.QueryDim + (2 * config.KvDim);
            Tokens = Allocate((long)maxTokens * sizeof(int));
            Hidden = Allocate((long)maxTokens * d * sizeof(float));
            Normed = Allocate((long)maxTokens * d * act);
            NormedLo = Allocate((long)maxTokens * d * act);
            QueryKeyValue = Allocate((long)maxTokens * qkvWidth * sizeof(float));
            Query = Allocate((long)maxTokens * config.QueryDim * sizeof(float));
            AttentionOutput = Allocate((long)maxTokens * config.QueryDim * act);
            AttentionOutputLo = splitActivations ? Allocate((long)maxTokens * config.QueryDim * act) : null;
            Projected = Allocate((long)maxTokens * d * sizeof(float));
            GateUp = Allocate((long)maxTokens * 2 * config.IntermediateSize * sizeof(float));
            Activated = Allocate((long)maxTokens * config.IntermediateSize * act);
            ActivatedLo = splitActivations ? Allocate((long)maxTokens * config.IntermediateSize * act) : null;
            Logits = Allocate((long)logitRows * config.VocabSize * sizeof(float));
            Chosen = Allocate((long)maxTokens * sizeof(int));

            // Splits are used only while (query tiles x heads) is small, so their states fit in a bounded buffer.
            PartialQueries = Math.Min(maxTokens, (SplitTargetBlocksPerSm * context.MultiprocessorCount * CudaTransformer.AttentionRows / config.NumHeads) + CudaTransformer.AttentionRows);
            Partial = Allocate((long)MaxSplits * PartialQueries * config.NumHeads * (config.HeadDim + 2) * sizeof(float));

            PinnedTokens = Own(context.AllocatePinned((long)maxTokens * sizeof(int)));
            PinnedLogits = Own(context.AllocatePinned((long)logitRows * config.VocabSize * sizeof(float)));
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public int MaxTokens { get; }

    /// <summary>Rows of logits computed and copied back at once.</summary>
    public int LogitRows { get; }

    /// <summary>The most queries one attention launch may split over keys.</summary>
    public int PartialQueries { get; }

    public CudaStream Stream { get; } = null!;

    public Blas Blas { get; } = null!;

    public DeviceBuffer Tokens { get; } = null!;

    public DeviceBuffer Hidden { get; } = null!;

    public DeviceBuffer Normed { get; } = null!;

    /// <summary>The rounding error of <see cref="Normed"/> (split activations: always for the LM head).</summary>
    public DeviceBuffer NormedLo { get; } = null!;

    public DeviceBuffer QueryKeyValue { get; } = null!;

    public DeviceBuffer Query { get; } = null!;

    public DeviceBuffer AttentionOutput { get; } = null!;

    public DeviceBuffer? AttentionOutputLo { get; }

    public DeviceBuffer Projected { get; } = null!;

    public DeviceBuffer GateUp { get; } = null!;

    public DeviceBuffer Activated { get; } = null!;

    public DeviceBuffer? ActivatedLo { get; }

    public DeviceBuffer Logits { get; } = null!;

    public DeviceBuffer Chosen { get; } = null!;

    public DeviceBuffer Partial { get; } = null!;

    public PinnedBuffer PinnedTokens { get; } = null!;

    public PinnedBuffer PinnedLogits { get; } = null!;

    /// <summary>cos of the rotary table on the device, [positions][headDim / 2].</summary>
    public DeviceBuffer? RotaryCos { get; set; }

    /// <summary>sin of the rotary table on the device, [positions][headDim / 2].</summary>
    public DeviceBuffer? RotarySin { get; set; }

    /// <summary>Positions the device rotary table covers (and, for dynamic RoPE, was computed for).</summary>
    public int RotaryPositions { get; set; }

    public void Dispose()
    {
        RotaryCos?.Dispose();
        RotarySin?.Dispose();
        for (int i = _owned.Count - 1; i >= 0; i--)
        {
            _owned[i].Dispose();
        }

        _owned.Clear();
    }

    private DeviceBuffer Allocate(long bytes) => Own(_context.Allocate(Math.Max(bytes, 16)));

    private T Own<T>(T resource)
        where T : IDisposable
    {
        _owned.Add(resource);
        return resource;
    }
}
