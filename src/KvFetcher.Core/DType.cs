namespace KvFetcher.Core;

/// <summary>The element types KvFetcher stores and moves: weights, activations and KV caches.</summary>
public enum DType : byte
{
    Float32 = 0,
    Float16 = 1,
    BFloat16 = 2,
}

/// <summary>Sizes and names of <see cref="DType"/> values.</summary>
public static class DTypeExtensions
{
    /// <summary>Bytes per element.</summary>
    public static int SizeOf(this DType dtype) => dtype switch
    {
        DType.Float32 => 4,
        DType.Float16 => 2,
        DType.BFloat16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown dtype."),
    };

    /// <summary>The lower-case name used on the command line and in documents: fp32, fp16, bf16.</summary>
    public static string ToShortName(this DType dtype) => dtype switch
    {
        DType.Float32 => "fp32",
        DType.Float16 => "fp16",
        DType.BFloat16 => "bf16",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown dtype."),
    };

    /// <summary>Parses fp32/fp16/bf16 (also float32, float16, bfloat16), case-insensitively.</summary>
    public static bool TryParse(string? text, out DType dtype)
    {
        switch (text?.Trim().ToUpperInvariant())
        {
            case "FP32" or "FLOAT32" or "F32":
                dtype = DType.Float32;
                return true;
            case "FP16" or "FLOAT16" or "F16" or "HALF":
                dtype = DType.Float16;
                return true;
            case "BF16" or "BFLOAT16":
                dtype = DType.BFloat16;
                return true;
            default:
                dtype = default;
                return false;
        }
    }
}
