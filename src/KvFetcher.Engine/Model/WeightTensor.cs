using KvFetcher.Core;

namespace KvFetcher.Engine.Model;

/// <summary>
/// A read-only view of one tensor inside a memory-mapped weights file: its name, element type, shape and the
/// address of its little-endian bytes. The view stays valid while the owning <see cref="ModelWeights"/> is alive.
/// </summary>
public sealed unsafe class WeightTensor
{
    private readonly object _owner;

    internal WeightTensor(string name, DType dtype, int[] shape, byte* data, long byteLength, object owner)
    {
        Name = name;
        DType = dtype;
        Shape = shape;
        Data = data;
        ByteLength = byteLength;
        _owner = owner;
    }

    /// <summary>The tensor's name in the checkpoint, e.g. <c>model.layers.0.self_attn.q_proj.weight</c>.</summary>
    public string Name { get; }

    /// <summary>The stored element type.</summary>
    public DType DType { get; }

    /// <summary>The dimensions, outermost first (a Linear weight is [out_features, in_features]).</summary>
    public int[] Shape { get; }

    /// <summary>Bytes of data: the product of <see cref="Shape"/> times the element size.</summary>
    public long ByteLength { get; }

    /// <summary>Number of elements.</summary>
    public long ElementCount => ByteLength / DType.SizeOf();

    /// <summary>Rows of a 2-D tensor (its first dimension).</summary>
    public int Rows => Shape[0];

    /// <summary>Columns of a 2-D tensor (its last dimension).</summary>
    public int Columns => Shape[^1];

    /// <summary>Address of the first element, for kernels. Valid while the owner is alive.</summary>
    internal byte* Data { get; }

    /// <summary>The raw bytes (tensors larger than 2 GiB must be read through <see cref="Row"/>).</summary>
    public ReadOnlySpan<byte> Bytes => new(Data, checked((int)ByteLength));

    /// <summary>
    /// <paramref name="length"/> raw bytes from byte <paramref name="offset"/>: how tensors of any size are read in
    /// pieces (e.g. uploaded to a device).
    /// </summary>
    public ReadOnlySpan<byte> Slice(long offset, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(offset, ByteLength - length);
        return new ReadOnlySpan<byte>(Data + offset, length);
    }

    /// <summary>The raw bytes of row <paramref name="row"/> of a 2-D tensor.</summary>
    public ReadOnlySpan<byte> Row(int row)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, Rows);
        int rowBytes = Columns * DType.SizeOf();
        return new ReadOnlySpan<byte>(Data + ((long)row * rowBytes), rowBytes);
    }

    /// <summary>Widens the whole tensor to fp32 into <paramref name="destination"/>.</summary>
    public void CopyTo(Span<float> destination) => Core.Numerics.FloatConversions.ToSingle(DType, Bytes, destination);

    /// <summary>Widens the whole tensor to a new fp32 array (for small tensors: norms, biases).</summary>
    public float[] ToSingleArray()
    {
        var result = new float[ElementCount];
        CopyTo(result);
        return result;
    }

    internal object Owner => _owner;

    public override string ToString() => $"{Name} {DType.ToShortName()} [{string.Join(", ", Shape)}]";
}
