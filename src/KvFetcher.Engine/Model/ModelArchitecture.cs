namespace KvFetcher.Engine.Model;

/// <summary>The decoder-only model families the engine runs (all Llama-shaped: RMSNorm, RoPE, GQA, SwiGLU).</summary>
public enum ModelArchitecture
{
    /// <summary><c>LlamaForCausalLM</c> (<c>model_type</c> "llama").</summary>
    Llama,

    /// <summary><c>MistralForCausalLM</c> (<c>model_type</c> "mistral").</summary>
    Mistral,

    /// <summary><c>Qwen2ForCausalLM</c> (<c>model_type</c> "qwen2"): biases on the q/k/v projections.</summary>
    Qwen2,
}
