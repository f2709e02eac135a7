using KvFetcher.Core.Threading;
using KvFetcher.Engine.Model;

namespace KvFetcher.Engine.Cpu;

/// <summary>
/// The Llama-family forward pass on the CPU in fp32 arithmetic over the memory-mapped weights (bf16, fp16 or fp32):
/// embedding, per layer RMSNorm, q/k/v projections (+ Qwen2 biases), RoPE, grouped-query causal attention over the
/// KV cache, output projection, RMSNorm, SwiGLU MLP; final RMSNorm and the LM head. Stateless between calls: all
/// per-sequence state is in the <see cref="KvCache"/> and the caller's <see cref="ForwardScratch"/>.
/// </summary>
internal sealed class CpuTransformer
{
    private readonly ModelConfig _config;
    private readonly Layer[] _layers;
    private readonly WeightTensor _embedding;
    private readonly WeightTensor _lmHead;
    private readonly float[] _finalNorm;
    private readonly WorkerPool _pool;
    private readonly Lock _rotaryLock = new();
    private RotaryTable _rotary;

    public CpuTransformer(ModelConfig config, ModelWeights weights, WorkerPool pool)
    {
        _config = config;
        _pool = pool;
        _embedding = weights.Get("model.embed_tokens.weight");
        _lmHead = config.TieWordEmbeddings ? _embedding : weights.Get("lm_head.weight");
        _finalNorm = weights.Get("model.norm.weight").ToSingleArray();
        _layers = new Layer[config.NumLayers];
        for (int i = 0; i < _layers.Length; i++)
        {
            _layers[i] = new Layer(config, weights, i);
        }

        _rotary = new RotaryTable(config.Rope, config.HeadDim, config.MaxPositionEmbeddings, Math.Min(config.MaxPositionEmbeddings, 4096));

        // Each thread's scratch made once, now: a worker that takes part in a step for the first time allocates nothing.
        MatMul.PrepareThreads(pool);
        Attention.PrepareThreads(pool, config.HeadDim);
    }

    public ModelConfig Config => _config;

    /// <summary>
    /// Computes the tokens at positions [start, start + n), writing their K/V into <paramref name="cache"/>, and the
    /// logits of the last token (when <paramref name="allLogits"/> is false) or of every token ([n, vocab]); with empty
    /// <paramref name="logits"/> the step only fills the cache (no final norm or LM head). Positions [0, start) must be filled. n must not exceed the scratch's capacity.
    /// </summary>
    public void Forward(ReadOnlySpan<int> tokens, int start, KvCache cache, ForwardScratch scratch, Span<float> logits, bool allLogits, IAttentionProbe? probe = null) =>
        Forward(tokens, start, cache, scratch, logits, allLogits, _layers.Length, probe);

    /// <summary>
    /// <see cref="Forward(ReadOnlySpan{int}, int, KvCache, ForwardScratch, Span{float}, bool, IAttentionProbe?)"/> through
    /// the lower <paramref name="layers"/> layers only: below all of them the step writes those layers' K/V, marks them
    /// computed (the positions are filled once their upper layers are imported) and computes no logits.
    /// </summary>
    public void Forward(ReadOnlySpan<int> tokens, int start, KvCache cache, ForwardScratch scratch, Span<float> logits, bool allLogits, int layers, IAttentionProbe? probe = null)
    {
        int n = tokens.Length;
        ModelConfig c = _config;
        int d = c.HiddenSize;
        int qWidth = c.NumHeads * c.HeadDim;
        int kvWidth = c.NumKvHeads * c.HeadDim;
        int ffn = c.IntermediateSize;
        RotaryTable rotary = EnsureRotary(start + n);

        Span<float> x = scratch.Hidden.AsSpan(0, n * d);
        Span<float> normed = scratch.Normed.AsSpan(0, n * d);
        Span<float> q = scratch.Query.AsSpan(0, n * qWidth);
        Span<float> k = scratch.Key.AsSpan(0, n * kvWidth);
        Span<float> v = scratch.Value.AsSpan(0, n * kvWidth);
        Span<float> attention = scratch.AttentionOutput.AsSpan(0, n * qWidth);
        Span<float> projected = scratch.Projected.AsSpan(0, n * d);
        Span<float> gate = scratch.Gate.AsSpan(0, n * ffn);
        Span<float> up = scratch.Up.AsSpan(0, n * ffn);

        for (int i = 0; i < n; i++)
        {
            int token = tokens[i];
            if ((uint)token >= (uint)c.VocabSize)
            {
                throw new ArgumentOutOfRangeException(nameof(tokens), token, $"Token id at index {i} is outside the vocabulary of {c.VocabSize}.");
            }

            Core.Numerics.FloatConversions.ToSingle(_embedding.DType, _embedding.Row(token), x.Slice(i * d, d));
        }

        for (int l = 0; l < layers; l++)
        {
            Layer layer = _layers[l];
            RmsNormRows(x, layer.InputNorm, normed, n, d);
            MatMul.Multiply(normed, n, layer.QueryProjection, q, _pool, layer.QueryBias);
            MatMul.Multiply(normed, n, layer.KeyProjection, k, _pool, layer.KeyBias);
            MatMul.Multiply(normed, n, layer.ValueProjection, v, _pool, layer.ValueBias);
            probe?.Observe(l, start, n, q, k, rotated: false);
            for (int i = 0; i < n; i++)
            {
                int position = start + i;
                Kernels.Rope(q.Slice(i * qWidth, qWidth), c.NumHeads, c.HeadDim, rotary.Cos(position), rotary.Sin(position));
                Kernels.Rope(k.Slice(i * kvWidth, kvWidth), c.NumKvHeads, c.HeadDim, rotary.Cos(position), rotary.Sin(position));
            }

            probe?.Observe(l, start, n, q, k, rotated: true);
            cache.Write(l, start, n, k, v);
            scratch.Attention.Run(q, n, start, cache, l, c.UsesSlidingWindow(l) ? c.SlidingWindow : null, attention, _pool);
            MatMul.Multiply(attention, n, layer.OutputProjection, projected, _pool, layer.OutputBias);
            Add(x, projected);

            RmsNormRows(x, layer.PostAttentionNorm, normed, n, d);
            MatMul.Multiply(normed, n, layer.GateProjection, gate, _pool, layer.GateBias);
            MatMul.Multiply(normed, n, layer.UpProjection, up, _pool, layer.UpBias);
            Kernels.SwiGlu(gate, up);
            MatMul.Multiply(gate, n, layer.DownProjection, projected, _pool, layer.DownBias);
            Add(x, projected);
        }

        if (layers < _layers.Length)
        {
            cache.MarkLowerLayers(start, start + n, layers);
            return;
        }

        cache.MarkFilled(start, start + n);
        if (logits.IsEmpty)
        {
            return;
        }

        int firstRow = allLogits ? 0 : n - 1;
        int rows = n - firstRow;
        Span<float> finalRows = normed.Slice(0, rows * d);
        RmsNormRows(x.Slice(firstRow * d), _finalNorm, finalRows, rows, d);
        MatMul.Multiply(finalRows, rows, _lmHead, logits.Slice(0, rows * c.VocabSize), _pool);
    }

    private RotaryTable EnsureRotary(int positions)
    {
        RotaryTable table = _rotary;
        if (positions <= table.Positions && _config.Rope.Type != "dynamic")
        {
            return table;
        }

        lock (_rotaryLock)
        {
            if (_rotary.Positions < positions || (_config.Rope.Type == "dynamic" && _rotary.Positions != positions))
            {
                int size = _config.Rope.Type == "dynamic" ? positions : Math.Max(positions, _rotary.Positions * 2);
                _rotary = new RotaryTable(_config.Rope, _config.HeadDim, _config.MaxPositionEmbeddings, size);
            }

            return _rotary;
        }
    }

    private void RmsNormRows(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, Span<float> y, int rows, int width)
    {
        for (int i = 0; i < rows; i++)
        {
            Kernels.RmsNorm(x.Slice(i * width, width), weight, _config.RmsNormEps, y.Slice(i * width, width));
        }
    }

    private static void Add(Span<float> x, ReadOnlySpan<float> y) => System.Numerics.Tensors.TensorPrimitives.Add(x, y, x);

    private sealed class Layer
    {
        public Layer(ModelConfig config, ModelWeights weights, int index)
        {
            string p = $"model.layers.{index}.";
            InputNorm = weights.Get(p + "input_layernorm.weight").ToSingleArray();
            PostAttentionNorm = weights.Get(p + "post_attention_layernorm.weight").ToSingleArray();
            QueryProjection = weights.Get(p + "self_attn.q_proj.weight");
            KeyProjection = weights.Get(p + "self_attn.k_proj.weight");
            ValueProjection = weights.Get(p + "self_attn.v_proj.weight");
            OutputProjection = weights.Get(p + "self_attn.o_proj.weight");
            GateProjection = weights.Get(p + "mlp.gate_proj.weight");
            UpProjection = weights.Get(p + "mlp.up_proj.weight");
            DownProjection = weights.Get(p + "mlp.down_proj.weight");
            if (config.AttentionBias)
            {
                QueryBias = weights.Get(p + "self_attn.q_proj.bias").ToSingleArray();
                KeyBias = weights.Get(p + "self_attn.k_proj.bias").ToSingleArray();
                ValueBias = weights.Get(p + "self_attn.v_proj.bias").ToSingleArray();
            }

            if (config.OutputBias)
            {
                OutputBias = weights.Get(p + "self_attn.o_proj.bias").ToSingleArray();
            }

            if (config.MlpBias)
            {
                GateBias = weights.Get(p + "mlp.gate_proj.bias").ToSingleArray();
                UpBias = weights.Get(p + "mlp.up_proj.bias").ToSingleArray();
                DownBias = weights.Get(p + "mlp.down_proj.bias").ToSingleArray();
            }
        }

        public float[] InputNorm { get; }

        public float[] PostAttentionNorm { get; }

        public WeightTensor QueryProjection { get; }

        public WeightTensor KeyProjection { get; }

        public WeightTensor ValueProjection { get; }

        public WeightTensor OutputProjection { get; }

        public WeightTensor GateProjection { get; }

        public WeightTensor UpProjection { get; }

        public WeightTensor DownProjection { get; }

        public float[]? QueryBias { get; }

        public float[]? KeyBias { get; }

        public float[]? ValueBias { get; }

        public float[]? OutputBias { get; }

        public float[]? GateBias { get; }

        public float[]? UpBias { get; }

        public float[]? DownBias { get; }
    }
}
