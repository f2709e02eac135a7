using KvFetcher.Core;
using KvFetcher.Engine.Cpu;
using KvFetcher.Engine.Model;
using KvFetcher.Cuda.Native;

namespace KvFetcher.Cuda.Gpu;

/// <summary>
/// The Llama-family forward pass on a CUDA device, step for step the CPU engine's (<see cref="CpuTransformer"/>):
/// embedding, per layer RMSNorm, fused q/k/v projection (+ biases), RoPE, grouped-query causal attention over the
/// device KV cache (sliding window per layer), output projection, RMSNorm, fused gate/up projection, SwiGLU, down
/// projection; final RMSNorm and the LM head. Matrix products on cuBLAS, everything else in the NVRTC-compiled
/// kernels of Gpu/Kernels. Stateless between calls: per-sequence state is in the cache and the session's scratch.
/// </summary>
internal sealed unsafe class CudaTransformer : IDisposable
{
    /// <summary>(query, head) rows per attention block (ATT_ROWS in Kernels/Attention.cuh).</summary>
    public const int AttentionRows = 16;

    /// <summary>(query, head) rows per narrow flash attention block (Kernels/Attention.cuh, flash_attention_narrow); shorter steps use CUDA cores.</summary>
    public const int FlashRows = 64;

    /// <summary>(query, head) rows per wide flash attention block (Kernels/Attention.cuh, flash_attention).</summary>
    public const int WideFlashRows = 128;

    /// <summary>The most (query, head) rows per KV head that a step may have to take the decode attention kernel (DEC_ROWS).</summary>
    public const int DecodeRows = 8;

    /// <summary>The most rows the GEMV kernel takes (GEMV_ROWS); longer steps go to cuBLAS.</summary>
    public const int GemvRows = 4;

    private const int AttentionKeys = 32;
    private const int AttentionThreads = 128;
    private const int FlashKeys = 64;
    private const int DecodeThreads = 128;
    private const int DecodeKeysPerSplit = 128;
    private const int GemvOutputsPerBlock = 16;

    private readonly CudaContext _context;
    private readonly ModelConfig _config;
    private readonly DeviceWeights _weights;
    private readonly KernelModule _module;
    private readonly CudaKernel _embed;
    private readonly CudaKernel _rmsNorm;
    private readonly CudaKernel _qkvRope;
    private readonly CudaKernel _attention;
    private readonly CudaKernel _attentionCombine;
    private readonly CudaKernel _residualAdd;
    private readonly CudaKernel _residualRmsNorm;
    private readonly CudaKernel _swiGlu;
    private readonly CudaKernel _argMax;
    private readonly CudaKernel _fillUniform;
    private readonly CudaKernel _flashAttention;
    private readonly CudaKernel _flashAttentionNarrow;
    private readonly CudaKernel _decodeAttention4;
    private readonly CudaKernel _decodeAttention8;
    private readonly CudaKernel _gemv;
    private readonly int _flashSharedBytes;
    private readonly int _flashNarrowSharedBytes;
    private readonly int _attentionSharedBytes;
    private readonly float _attentionScale;

    /// <summary>Takes ownership of <paramref name="weights"/> and compiles the kernels for them.</summary>
    public CudaTransformer(CudaContext context, ModelConfig config, DeviceWeights weights, DType kvStorage, CudaMatmulPrecision precision, CudaAttentionKernel attention = CudaAttentionKernel.Auto)
    {
        if (config.HeadDim > 256)
        {
            weights.Dispose();
            throw new NotSupportedException($"The CUDA attention kernel supports head dimensions up to 256; the model's is {config.HeadDim}.");
        }

        _context = context;
        _config = config;
        Precision = precision;
        DType matmulType = weights.MatmulType;
        KvStorageDType = kvStorage;
        SplitHeadActivations = matmulType != DType.Float32;
        SplitLayerActivations = SplitHeadActivations && precision == CudaMatmulPrecision.StoredSplit;
        _weights = weights;
        bool flashFits = kvStorage != DType.Float32 && config.HeadDim % 16 == 0 && config.HeadDim <= 128;
        UsesTensorCoreAttention = flashFits && attention switch
        {
            CudaAttentionKernel.TensorCores => true,
            CudaAttentionKernel.Auto => precision == CudaMatmulPrecision.Stored,
            _ => false,
        };
        int hd = config.HeadDim;
        UsesDecodeAttention = attention != CudaAttentionKernel.CudaCores && kvStorage != DType.Float32 && hd % 8 == 0 && 32 % (hd / 8) == 0;
        UsesGemv = matmulType != DType.Float32 && config.HiddenSize % 8 == 0 && config.QueryDim % 8 == 0 && config.IntermediateSize % 8 == 0;
        try
        {
            List<string> defines =
            [
                $"HEAD_DIM={config.HeadDim}",
                $"KV={TypeName(kvStorage)}",
                $"ACT={TypeName(matmulType)}",
                $"EMB={TypeName(_weights.EmbeddingType)}",
            ];
            if (UsesTensorCoreAttention)
            {
                defines.Add("TC_ATTENTION");
            }

            if (UsesDecodeAttention)
            {
                defines.Add("DECODE_ATTENTION");
            }

            if (UsesGemv)
            {
                defines.Add("GEMV");
            }

            _module = KernelModule.Compile(context, KernelModule.EngineSource, defines);
            _embed = _module.Get("embed");
            _rmsNorm = _module.Get("rmsnorm");
            _qkvRope = _module.Get("qkv_rope");
            _attention = _module.Get("attention");
            _attentionCombine = _module.Get("attention_combine");
            _residualAdd = _module.Get("residual_add");
            _residualRmsNorm = _module.Get("residual_rmsnorm");
            _swiGlu = _module.Get("swiglu");
            _argMax = _module.Get("argmax");
            _fillUniform = _module.Get("fill_uniform");
            _attentionSharedBytes = ((AttentionRows * hd) + (AttentionKeys * (hd + 1)) + (AttentionKeys * hd)) * sizeof(float);
            if (_attentionSharedBytes > 48 * 1024)
            {
                if (_attentionSharedBytes > context.MaxSharedMemoryPerBlock)
                {
                    throw new NotSupportedException($"Attention over head dimension {hd} needs {_attentionSharedBytes} bytes of shared memory per block; the device allows {context.MaxSharedMemoryPerBlock}.");
                }

                _attention.SetMaxDynamicSharedMemory(_attentionSharedBytes);
            }

            _attentionScale = 1f / MathF.Sqrt(hd);
            if (UsesTensorCoreAttention)
            {
                // The Q tile and two stages of key and value tiles, rows padded by 8 elements (Kernels/Attention.cuh, flash_body).
                _flashAttention = _module.Get("flash_attention");
                _flashAttentionNarrow = _module.Get("flash_attention_narrow");
                _flashSharedBytes = ((WideFlashRows + (2 * 2 * FlashKeys)) * (hd + 8)) * sizeof(ushort);
                _flashNarrowSharedBytes = ((FlashRows + (2 * 2 * FlashKeys)) * (hd + 8)) * sizeof(ushort);
                _flashAttention.SetMaxDynamicSharedMemory(_flashSharedBytes);
                _flashAttentionNarrow.SetMaxDynamicSharedMemory(_flashNarrowSharedBytes);
            }

            if (UsesDecodeAttention)
            {
                _decodeAttention4 = _module.Get("decode_attention_4");
                _decodeAttention8 = _module.Get("decode_attention_8");
            }

            if (UsesGemv)
            {
                _gemv = _module.Get("gemv");
            }
        }
        catch
        {
            _module?.Dispose();
            _weights.Dispose();
            throw;
        }
    }

    public ModelConfig Config => _config;

    public CudaMatmulPrecision Precision { get; }

    /// <summary>Whether prefill steps of at least <see cref="FlashRows"/> (query, head) rows per KV head run on the tensor cores.</summary>
    public bool UsesTensorCoreAttention { get; }

    /// <summary>Whether decode-sized steps (at most <see cref="DecodeRows"/> rows per KV head) take the split-K decode attention kernel (16-bit cache).</summary>
    public bool UsesDecodeAttention { get; }

    /// <summary>Whether products of at most <see cref="GemvRows"/> rows take the GEMV kernel instead of cuBLAS (16-bit products).</summary>
    public bool UsesGemv { get; }

    public DType KvStorageDType { get; }

    /// <summary>The element type the matrix products take.</summary>
    public DType MatmulType => _weights.MatmulType;

    /// <summary>Whether the LM head's input is split in hi + lo (16-bit products).</summary>
    public bool SplitHeadActivations { get; }

    /// <summary>Whether every layer product's input is split in hi + lo (<see cref="CudaMatmulPrecision.StoredSplit"/>).</summary>
    public bool SplitLayerActivations { get; }

    /// <summary>Device bytes of the weights.</summary>
    public long WeightBytes => _weights.Bytes;

    internal KernelModule Module => _module;

    /// <summary>
    /// Computes the tokens at positions [start, start + n), writing their K/V into <paramref name="cache"/>, and the
    /// logits of the last token (when <paramref name="allLogits"/> is false) or of every token ([n, vocab]) into
    /// <paramref name="logits"/>, or (when <paramref name="logits"/> is empty) only the greedy choice of the last
    /// token, which it returns. Positions [0, start) must be filled. n must not exceed the scratch's capacity.
    /// </summary>
    public int Forward(ReadOnlySpan<int> tokens, int start, CudaKvCache cache, DeviceScratch s, Span<float> logits, bool allLogits)
    {
        int n = tokens.Length;
        ModelConfig c = _config;
        int d = c.HiddenSize;
        Layers(tokens, start, cache, s, c.NumLayers);
        CudaStream stream = s.Stream;
        int firstRow = allLogits ? 0 : n - 1;
        int rows = n - firstRow;
        int vocab = c.VocabSize;
        int act = MatmulType.SizeOf();
        ulong finalHidden = s.Hidden.Pointer + (ulong)((long)firstRow * d * sizeof(float));
        ulong headLo = SplitHeadActivations ? s.NormedLo.Pointer : 0;
        RmsNorm(stream, finalHidden, _weights.FinalNorm, s.Normed.Pointer, headLo, rows);
        int chosen = -1;
        for (int done = 0; done < rows; done += s.LogitRows)
        {
            int count = Math.Min(s.LogitRows, rows - done);
            ulong rowOffset = (ulong)((long)done * d * act);
            Linear(s, s.Normed.Pointer + rowOffset, headLo == 0 ? 0 : headLo + rowOffset, _weights.LmHead, s.Logits.Pointer, count, d, vocab);
            if (logits.IsEmpty)
            {
                var args = default(KernelArguments);
                args.Add(s.Logits.Pointer + (ulong)((long)(count - 1) * vocab * sizeof(float)));
                args.Add(s.Chosen.Pointer);
                args.Add(vocab);
                _argMax.Launch(stream, (1, 1, 1), 1024, 0, ref args);
                Check.Cuda(Interop.Cuda.cuMemcpyDtoHAsync(s.PinnedTokens.Pointer, s.Chosen.Pointer, sizeof(int), stream.Handle));
                stream.Synchronize();
                chosen = s.PinnedTokens.AsSpan<int>()[0];
                continue;
            }

            long bytes = (long)count * vocab * sizeof(float);
            Check.Cuda(Interop.Cuda.cuMemcpyDtoHAsync(s.PinnedLogits.Pointer, s.Logits.Pointer, (nuint)bytes, stream.Handle));
            stream.Synchronize();
            s.PinnedLogits.AsSpan<float>()[..(count * vocab)].CopyTo(logits.Slice(done * vocab, count * vocab));
        }

        cache.MarkFilled(start, start + n);
        return chosen;
    }

    /// <summary>
    /// Computes the tokens at positions [start, start + n) through the lower <paramref name="layers"/> layers only (1 to
    /// the model's layers - 1), writing those layers' K/V into <paramref name="cache"/>, and marks them computed: the
    /// positions are filled once their upper layers are imported (<see cref="CudaKvCache.ImportLayers(int, int, int, DType, ReadOnlySpan{byte})"/>).
    /// The same kernels on the same inputs as <see cref="Forward"/>, so those layers' K/V are exactly a full step's.
    /// Returns when the work on the device is done. Positions [0, start) must be filled.
    /// </summary>
    public void ForwardLowerLayers(ReadOnlySpan<int> tokens, int start, CudaKvCache cache, DeviceScratch s, int layers)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(layers, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layers, _config.NumLayers);
        Layers(tokens, start, cache, s, layers);

        // Another thread may read the cache once the positions are filled (an export): the values must be there.
        s.Stream.Synchronize();
        cache.MarkLowerLayers(start, start + tokens.Length, layers);
    }

    /// <summary>
    /// Queues the embedding and layers [0, <paramref name="layers"/>) of the tokens at [start, start + n): each layer's
    /// K/V into <paramref name="cache"/>, and (all layers) the last layer's output in the scratch's hidden state. With
    /// fewer than all layers the last one stops once its K/V are written: nothing reads its output.
    /// </summary>
    private void Layers(ReadOnlySpan<int> tokens, int start, CudaKvCache cache, DeviceScratch s, int layers)
    {
        int n = tokens.Length;
        ModelConfig c = _config;
        int d = c.HiddenSize;
        int qkvWidth = c.QueryDim + (2 * c.KvDim);
        int ffn = c.IntermediateSize;
        for (int i = 0; i < n; i++)
        {
            if ((uint)tokens[i] >= (uint)c.VocabSize)
            {
                throw new ArgumentOutOfRangeException(nameof(tokens), tokens[i], $"Token id at index {i} is outside the vocabulary of {c.VocabSize}.");
            }
        }

        _context.MakeCurrent();
        EnsureRotary(s, start + n);
        CudaStream stream = s.Stream;
        tokens.CopyTo(s.PinnedTokens.AsSpan<int>());
        Check.Cuda(Interop.Cuda.cuMemcpyHtoDAsync(s.Tokens.Pointer, s.PinnedTokens.Pointer, (nuint)(n * sizeof(int)), stream.Handle));

        var args = default(KernelArguments);
        args.Add(s.Tokens.Pointer);
        args.Add(_weights.Embedding);
        args.Add(s.Hidden.Pointer);
        args.Add(d);
        _embed.Launch(stream, (n, 1, 1), 128, 0, ref args);

        for (int l = 0; l < layers; l++)
        {
            DeviceWeights.Layer layer = _weights.Layers[l];
            ulong normedLo = SplitLayerActivations ? s.NormedLo.Pointer : 0;
            if (l == 0)
            {
                // Later layers' input norms run fused with the previous layer's last residual add.
                RmsNorm(stream, s.Hidden.Pointer, layer.InputNorm, s.Normed.Pointer, normedLo, n);
            }

            Linear(s, s.Normed.Pointer, normedLo, layer.QueryKeyValue, s.QueryKeyValue.Pointer, n, d, qkvWidth);

            args = default;
            args.Add(s.QueryKeyValue.Pointer);
            args.Add(layer.QueryKeyValueBias);
            args.Add(s.RotaryCos!.Pointer);
            args.Add(s.RotarySin!.Pointer);
            args.Add(s.Query.Pointer);
            args.Add(cache.LayerKeys(l));
            args.Add(cache.LayerValues(l));
            args.Add(start);
            args.Add(c.NumHeads);
            args.Add(c.NumKvHeads);
            args.Add(cache.Capacity);
            _qkvRope.Launch(stream, (n, 1, 1), 128, 0, ref args);
            if (l + 1 == layers && layers < c.NumLayers)
            {
                return;
            }

            Attention(stream, s, cache, l, n, start);
            Linear(s, s.AttentionOutput.Pointer, s.AttentionOutputLo?.Pointer ?? 0, layer.Output, s.Projected.Pointer, n, c.QueryDim, d);
            ResidualRmsNorm(stream, s.Hidden.Pointer, s.Projected.Pointer, layer.OutputBias, layer.PostAttentionNorm, s.Normed.Pointer, normedLo, n);
            Linear(s, s.Normed.Pointer, normedLo, layer.GateUp, s.GateUp.Pointer, n, d, 2 * ffn);
            args = default;
            args.Add(s.GateUp.Pointer);
            args.Add(layer.GateUpBias);
            args.Add(s.Activated.Pointer);
            args.Add(s.ActivatedLo?.Pointer ?? 0);
            args.Add(n);
            args.Add(ffn);
            _swiGlu.Launch(stream, (Blocks((long)n * ffn), 1, 1), 256, 0, ref args);
            Linear(s, s.Activated.Pointer, s.ActivatedLo?.Pointer ?? 0, layer.Down, s.Projected.Pointer, n, ffn, d);
            if (l + 1 < c.NumLayers)
            {
                ResidualRmsNorm(stream, s.Hidden.Pointer, s.Projected.Pointer, layer.DownBias, _weights.Layers[l + 1].InputNorm, s.Normed.Pointer, normedLo, n);
            }
            else
            {
                ResidualAdd(stream, s.Hidden.Pointer, s.Projected.Pointer, layer.DownBias, n * d, d);
            }
        }

    }

    /// <summary>Fills weights from <see cref="DeviceWeights.AllocateRandom"/> with random values.</summary>
    public void FillRandomWeights(int seed)
    {
        using CudaStream stream = _context.CreateStream();
        _weights.FillRandom(_fillUniform, stream, seed);
    }

    /// <summary>The matrix products' input type for <paramref name="precision"/>, given the checkpoint's type.</summary>
    public static DType MatmulTypeFor(CudaMatmulPrecision precision, DType stored) =>
        precision is CudaMatmulPrecision.Stored or CudaMatmulPrecision.StoredSplit ? stored : DType.Float32;

    public void Dispose()
    {
        _module.Dispose();
        _weights.Dispose();
    }

    /// <summary>The rotary table for positions [0, positions) on the device, built as the CPU engine builds it.</summary>
    private void EnsureRotary(DeviceScratch s, int positions)
    {
        bool dynamic = _config.Rope.Type == "dynamic";
        if (s.RotaryCos is not null && (dynamic ? s.RotaryPositions == positions : s.RotaryPositions >= positions))
        {
            return;
        }

        int size = dynamic
            ? positions
            : Math.Max(positions, Math.Max(Math.Min(_config.MaxPositionEmbeddings, 4096), s.RotaryPositions * 2));
        var table = new RotaryTable(_config.Rope, _config.HeadDim, _config.MaxPositionEmbeddings, size);
        int half = _config.HeadDim / 2;
        float[] cos = new float[size * half];
        float[] sin = new float[size * half];
        for (int p = 0; p < size; p++)
        {
            table.Cos(p).CopyTo(cos.AsSpan(p * half));
            table.Sin(p).CopyTo(sin.AsSpan(p * half));
        }

        // The previous table may still be read by queued work of this session's stream.
        s.Stream.Synchronize();
        if (s.RotaryCos is null || s.RotaryCos.Length < (long)cos.Length * sizeof(float))
        {
            s.RotaryCos?.Dispose();
            s.RotarySin?.Dispose();
            s.RotaryCos = null;
            s.RotarySin = null;
            s.RotaryCos = _context.Allocate((long)cos.Length * sizeof(float));
            s.RotarySin = _context.Allocate((long)sin.Length * sizeof(float));
        }

        s.RotaryCos.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(cos.AsSpan()));
        s.RotarySin!.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(sin.AsSpan()));
        s.RotaryPositions = size;
    }

    private void Attention(CudaStream stream, DeviceScratch s, CudaKvCache cache, int layer, int n, int start)
    {
        ModelConfig c = _config;
        int window = c.UsesSlidingWindow(layer) ? c.SlidingWindow!.Value : int.MaxValue;
        int group = c.NumHeads / c.NumKvHeads;
        var args = default(KernelArguments);
        if (UsesTensorCoreAttention && n * group >= FlashRows)
        {
            // Wide blocks (two row tiles per warp) while they still give every SM a block, else narrow ones.
            int wideBlocks = ((n * group) + WideFlashRows - 1) / WideFlashRows * c.NumKvHeads;
            bool wide = wideBlocks >= _context.MultiprocessorCount;
            int flashRows = wide ? WideFlashRows : FlashRows;
            args.Add(s.Query.Pointer);
            args.Add(cache.LayerKeys(layer));
            args.Add(cache.LayerValues(layer));
            args.Add(s.AttentionOutput.Pointer);
            args.Add(s.AttentionOutputLo?.Pointer ?? 0);
            args.Add(n);
            args.Add(start);
            args.Add(c.NumHeads);
            args.Add(group);
            args.Add(cache.Capacity);
            args.Add(window);
            args.Add(_attentionScale);
            (wide ? _flashAttention : _flashAttentionNarrow).Launch(
                stream, (((n * group) + flashRows - 1) / flashRows, c.NumKvHeads, 1), 128, wide ? _flashSharedBytes : _flashNarrowSharedBytes, ref args);
            return;
        }

        if (UsesDecodeAttention && n * group <= DecodeRows)
        {
            // Flash decoding: key ranges of at least DecodeKeysPerSplit keys, at most as many blocks as run at once
            // (three per SM at the kernel's register use), so that no second, mostly idle wave follows.
            int span = Math.Min(window, start + n);
            int splitCount = Math.Min((span + DecodeKeysPerSplit - 1) / DecodeKeysPerSplit, Math.Max(1, 3 * _context.MultiprocessorCount / c.NumKvHeads));
            splitCount = Math.Max(1, Math.Min(splitCount, DeviceScratch.MaxSplits * s.PartialQueries / n));
            DecodeAttention(stream, s, cache, layer, n, start, window, group, splitCount);
            return;
        }

        int tiles = ((n * group) + AttentionRows - 1) / AttentionRows;
        int blocks = tiles * c.NumKvHeads;
        int keys = Math.Min(window, start + n);
        int splits = 1;
        int target = DeviceScratch.SplitTargetBlocksPerSm * _context.MultiprocessorCount;
        if (blocks < target && n <= s.PartialQueries)
        {
            // Enough blocks to fill the device, each split at least four key tiles, within the split-state buffer.
            splits = (target + blocks - 1) / blocks;
            splits = Math.Min(splits, Math.Max(1, keys / (4 * AttentionKeys)));
            splits = Math.Min(splits, DeviceScratch.MaxSplits * s.PartialQueries / n);
        }

        args.Add(s.Query.Pointer);
        args.Add(cache.LayerKeys(layer));
        args.Add(cache.LayerValues(layer));
        args.Add(s.AttentionOutput.Pointer);
        args.Add(s.AttentionOutputLo?.Pointer ?? 0);
        args.Add(s.Partial.Pointer);
        args.Add(n);
        args.Add(start);
        args.Add(c.NumHeads);
        args.Add(group);
        args.Add(cache.Capacity);
        args.Add(window);
        args.Add(_attentionScale);
        args.Add(splits);
        _attention.Launch(stream, (tiles, c.NumKvHeads, splits), AttentionThreads, _attentionSharedBytes, ref args);
        if (splits > 1)
        {
            Combine(stream, s, n, splits);
        }
    }

    /// <summary>
    /// y = x · wᵀ (<see cref="Blas.Linear"/>): decode-sized products (at most <see cref="GemvRows"/> rows, no split
    /// activations) on the GEMV kernel, which streams the weight at close to the memory bandwidth where cuBLAS's
    /// choice for one row does not; everything else on cuBLAS.
    /// </summary>
    private void Linear(DeviceScratch s, ulong x, ulong xLo, ulong w, ulong y, int rows, int inFeatures, int outFeatures)
    {
        if (!UsesGemv || rows > GemvRows || xLo != 0 || inFeatures % 8 != 0 || ((x | w) & 15) != 0)
        {
            s.Blas.Linear(x, xLo, w, y, rows, inFeatures, outFeatures);
            return;
        }

        var args = default(KernelArguments);
        args.Add(x);
        args.Add(w);
        args.Add(y);
        args.Add(rows);
        args.Add(inFeatures);
        args.Add(outFeatures);
        _gemv.Launch(s.Stream, ((outFeatures + GemvOutputsPerBlock - 1) / GemvOutputsPerBlock, 1, 1), 256, 0, ref args);
    }

    private void DecodeAttention(CudaStream stream, DeviceScratch s, CudaKvCache cache, int layer, int n, int start, int window, int group, int splits)
    {
        ModelConfig c = _config;
        var args = default(KernelArguments);
        args.Add(s.Query.Pointer);
        args.Add(cache.LayerKeys(layer));
        args.Add(cache.LayerValues(layer));
        args.Add(s.AttentionOutput.Pointer);
        args.Add(s.AttentionOutputLo?.Pointer ?? 0);
        args.Add(s.Partial.Pointer);
        args.Add(n);
        args.Add(start);
        args.Add(c.NumHeads);
        args.Add(group);
        args.Add(cache.Capacity);
        args.Add(window);
        args.Add(_attentionScale);
        args.Add(splits);
        (n * group <= 4 ? _decodeAttention4 : _decodeAttention8).Launch(stream, (splits, c.NumKvHeads, 1), DecodeThreads, 0, ref args);
        if (splits > 1)
        {
            Combine(stream, s, n, splits);
        }
    }

    private void Combine(CudaStream stream, DeviceScratch s, int n, int splits)
    {
        var args = default(KernelArguments);
        args.Add(s.Partial.Pointer);
        args.Add(s.AttentionOutput.Pointer);
        args.Add(s.AttentionOutputLo?.Pointer ?? 0);
        args.Add(n);
        args.Add(_config.NumHeads);
        args.Add(splits);
        _attentionCombine.Launch(stream, (n, _config.NumHeads, 1), 32, 0, ref args);
    }

    private void RmsNorm(CudaStream stream, ulong x, ulong weight, ulong y, ulong yLo, int rows)
    {
        var args = default(KernelArguments);
        args.Add(x);
        args.Add(weight);
        args.Add(y);
        args.Add(yLo);
        args.Add(_config.HiddenSize);
        args.Add(_config.RmsNormEps);
        _rmsNorm.Launch(stream, (rows, 1, 1), 256, 0, ref args);
    }

    /// <summary>x += y (+ bias), then y' = rmsnorm(x) into <paramref name="normed"/> (+ lo): one kernel instead of two.</summary>
    private void ResidualRmsNorm(CudaStream stream, ulong x, ulong y, ulong bias, ulong weight, ulong normed, ulong normedLo, int rows)
    {
        var args = default(KernelArguments);
        args.Add(x);
        args.Add(y);
        args.Add(bias);
        args.Add(weight);
        args.Add(normed);
        args.Add(normedLo);
        args.Add(_config.HiddenSize);
        args.Add(_config.RmsNormEps);
        _residualRmsNorm.Launch(stream, (rows, 1, 1), 256, 0, ref args);
    }

    private void ResidualAdd(CudaStream stream, ulong x, ulong y, ulong bias, int count, int width)
    {
        var args = default(KernelArguments);
        args.Add(x);
        args.Add(y);
        args.Add(bias);
        args.Add(count);
        args.Add(width);
        _residualAdd.Launch(stream, (Blocks(count), 1, 1), 256, 0, ref args);
    }

    private static int Blocks(long elements) => (int)Math.Clamp((elements + 255) / 256, 1, 65_535);

    private static string TypeName(DType type) => type switch
    {
        DType.Float32 => "f32_t",
        DType.Float16 => "f16_t",
        DType.BFloat16 => "bf16_t",
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "Unknown dtype."),
    };
}
