using System.Buffers;
using KvFetcher.Core;
using KvFetcher.Core.Numerics;
using KvFetcher.Engine.Model;

namespace KvFetcher.Cuda.Gpu;

/// <summary>
/// A model's weights in device memory, uploaded once: the projections of each layer fused where they share an input
/// (q/k/v as one [q + 2 kv, hidden] matrix, gate/up as one [2 ffn, hidden]) in the products' input type, norms and
/// biases in fp32, the embedding table as stored, the LM head in the products' type (shared with the embedding
/// when tied and of that type).
/// </summary>
internal sealed unsafe class DeviceWeights : IDisposable
{
    private const int ChunkElements = 1 << 20;

    private readonly List<DeviceBuffer> _buffers = [];
    private readonly List<(DeviceBuffer Buffer, DType Type, float Low, float High)> _fills = [];
    private readonly CudaContext _context;

    private DeviceWeights(CudaContext context, DType matmulType, DType embeddingType)
    {
        _context = context;
        MatmulType = matmulType;
        EmbeddingType = embeddingType;
    }

    /// <summary>The element type of the projection and LM head matrices.</summary>
    public DType MatmulType { get; }

    /// <summary>The element type of the embedding table.</summary>
    public DType EmbeddingType { get; }

    public ulong Embedding { get; private set; }

    public ulong LmHead { get; private set; }

    public ulong FinalNorm { get; private set; }

    public Layer[] Layers { get; private set; } = [];

    /// <summary>Bytes of device memory the weights take.</summary>
    public long Bytes => _buffers.Sum(b => b.Length);

    /// <summary>Uploads a checkpoint's weights, converting the projections to <paramref name="matmulType"/>.</summary>
    public static DeviceWeights Upload(CudaContext context, ModelConfig config, ModelWeights weights, DType matmulType)
    {
        WeightTensor embedding = weights.Get("model.embed_tokens.weight");
        var result = new DeviceWeights(context, matmulType, embedding.DType);
        try
        {
            result.Embedding = result.Upload([embedding], embedding.DType);
            result.LmHead = config.TieWordEmbeddings && embedding.DType == matmulType
                ? result.Embedding
                : result.Upload([config.TieWordEmbeddings ? embedding : weights.Get("lm_head.weight")], matmulType);
            result.FinalNorm = result.Upload([weights.Get("model.norm.weight")], DType.Float32);
            result.Layers = new Layer[config.NumLayers];
            for (int i = 0; i < config.NumLayers; i++)
            {
                string p = $"model.layers.{i}.";
                WeightTensor Get(string name) => weights.Get(p + name);
                ulong Optional(bool present, params string[] names) =>
                    present ? result.Upload([.. names.Select(Get)], DType.Float32) : 0;

                result.Layers[i] = new Layer(
                    InputNorm: result.Upload([Get("input_layernorm.weight")], DType.Float32),
                    PostAttentionNorm: result.Upload([Get("post_attention_layernorm.weight")], DType.Float32),
                    QueryKeyValue: result.Upload([Get("self_attn.q_proj.weight"), Get("self_attn.k_proj.weight"), Get("self_attn.v_proj.weight")], matmulType),
                    QueryKeyValueBias: Optional(config.AttentionBias, "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
                    Output: result.Upload([Get("self_attn.o_proj.weight")], matmulType),
                    OutputBias: Optional(config.OutputBias, "self_attn.o_proj.bias"),
                    GateUp: result.Upload([Get("mlp.gate_proj.weight"), Get("mlp.up_proj.weight")], matmulType),
                    GateUpBias: Optional(config.MlpBias, "mlp.gate_proj.bias", "mlp.up_proj.bias"),
                    Down: result.Upload([Get("mlp.down_proj.weight")], matmulType),
                    DownBias: Optional(config.MlpBias, "mlp.down_proj.bias"));
            }

            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Allocates the weights of a model of <paramref name="config"/>'s shape, to be filled with random values by
    /// <see cref="FillRandom"/> (for compute timing of shapes without a checkpoint). Norm weights are 1, biases 0.
    /// </summary>
    public static DeviceWeights AllocateRandom(CudaContext context, ModelConfig config, DType matmulType)
    {
        var result = new DeviceWeights(context, matmulType, matmulType);
        try
        {
            int d = config.HiddenSize;
            int ffn = config.IntermediateSize;
            float Uniform(int fanIn) => 1f / MathF.Sqrt(fanIn);
            result.Embedding = result.Random((long)config.VocabSize * d, matmulType, -1f, 1f);
            result.LmHead = config.TieWordEmbeddings ? result.Embedding : result.Random((long)config.VocabSize * d, matmulType, -Uniform(d), Uniform(d));
            result.FinalNorm = result.Random(d, DType.Float32, 1f, 1f);
            result.Layers = new Layer[config.NumLayers];
            for (int i = 0; i < config.NumLayers; i++)
            {
                int qkv = config.QueryDim + (2 * config.KvDim);
                result.Layers[i] = new Layer(
                    InputNorm: result.Random(d, DType.Float32, 1f, 1f),
                    PostAttentionNorm: result.Random(d, DType.Float32, 1f, 1f),
                    QueryKeyValue: result.Random((long)qkv * d, matmulType, -Uniform(d), Uniform(d)),
                    QueryKeyValueBias: config.AttentionBias ? result.Random(qkv, DType.Float32, 0f, 0f) : 0,
                    Output: result.Random((long)d * config.QueryDim, matmulType, -Uniform(config.QueryDim), Uniform(config.QueryDim)),
                    OutputBias: config.OutputBias ? result.Random(d, DType.Float32, 0f, 0f) : 0,
                    GateUp: result.Random(2L * ffn * d, matmulType, -Uniform(d), Uniform(d)),
                    GateUpBias: config.MlpBias ? result.Random(2 * ffn, DType.Float32, 0f, 0f) : 0,
                    Down: result.Random((long)d * ffn, matmulType, -Uniform(ffn), Uniform(ffn)),
                    DownBias: config.MlpBias ? result.Random(d, DType.Float32, 0f, 0f) : 0);
            }

            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    /// <summary>Fills what <see cref="AllocateRandom"/> allocated, with the engine module's <c>fill_uniform</c> kernel.</summary>
    public void FillRandom(CudaKernel fill, CudaStream stream, int seed)
    {
        uint salt = (uint)seed;
        foreach ((DeviceBuffer buffer, DType type, float low, float high) in _fills)
        {
            var args = default(KernelArguments);
            args.Add(buffer.Pointer);
            args.Add((int)type);
            args.Add((ulong)(buffer.Length / type.SizeOf()));
            args.Add(low);
            args.Add(high);
            args.Add((int)salt);
            salt = (salt * 2_654_435_761u) + 1;
            fill.Launch(stream, (4 * _context.MultiprocessorCount, 1, 1), 256, 0, ref args);
        }

        stream.Synchronize();
        _fills.Clear();
    }

    public void Dispose()
    {
        foreach (DeviceBuffer buffer in _buffers)
        {
            buffer.Dispose();
        }

        _buffers.Clear();
    }

    private ulong Random(long elements, DType type, float low, float high)
    {
        DeviceBuffer buffer = _context.Allocate(elements * type.SizeOf());
        _buffers.Add(buffer);
        _fills.Add((buffer, type, low, high));
        return buffer.Pointer;
    }

    /// <summary>Concatenates <paramref name="tensors"/> (outermost dimension) into one new device buffer of <paramref name="type"/>.</summary>
    private ulong Upload(WeightTensor[] tensors, DType type)
    {
        long elements = tensors.Sum(t => t.ElementCount);
        DeviceBuffer buffer = _context.Allocate(elements * type.SizeOf());
        _buffers.Add(buffer);
        long offset = 0;
        foreach (WeightTensor tensor in tensors)
        {
            if (tensor.DType == type)
            {
                for (long done = 0; done < tensor.ByteLength; done += int.MaxValue / 2)
                {
                    int count = (int)Math.Min(int.MaxValue / 2, tensor.ByteLength - done);
                    buffer.CopyFrom(tensor.Slice(done, count), offset + done);
                }

                offset += tensor.ByteLength;
                continue;
            }

            float[] wide = ArrayPool<float>.Shared.Rent(ChunkElements);
            byte[] narrow = ArrayPool<byte>.Shared.Rent(ChunkElements * 4);
            try
            {
                int sourceSize = tensor.DType.SizeOf();
                for (long done = 0; done < tensor.ElementCount; done += ChunkElements)
                {
                    int count = (int)Math.Min(ChunkElements, tensor.ElementCount - done);
                    FloatConversions.ToSingle(tensor.DType, tensor.Slice(done * sourceSize, count * sourceSize), wide.AsSpan(0, count));
                    FloatConversions.FromSingle(type, wide.AsSpan(0, count), narrow.AsSpan(0, count * type.SizeOf()));
                    buffer.CopyFrom(narrow.AsSpan(0, count * type.SizeOf()), offset);
                    offset += (long)count * type.SizeOf();
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(wide);
                ArrayPool<byte>.Shared.Return(narrow);
            }
        }

        return buffer.Pointer;
    }

    /// <summary>Device addresses of one layer's tensors; biases are 0 when the model has none.</summary>
    internal sealed record Layer(
        ulong InputNorm,
        ulong PostAttentionNorm,
        ulong QueryKeyValue,
        ulong QueryKeyValueBias,
        ulong Output,
        ulong OutputBias,
        ulong GateUp,
        ulong GateUpBias,
        ulong Down,
        ulong DownBias);
}
