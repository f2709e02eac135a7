using KvFetcher.Core;

namespace KvFetcher.Engine.Tests;

public class KvCacheTests
{
    private static KvCache Filled(DType storage, int capacity = 10)
    {
        var cache = new KvCache(numLayers: 2, numKvHeads: 2, headDim: 4, capacity, storage);
        var random = new Random(7);
        var keys = new float[capacity * 8];
        var values = new float[capacity * 8];
        for (int layer = 0; layer < 2; layer++)
        {
            for (int i = 0; i < keys.Length; i++)
            {
                keys[i] = (float)(random.NextDouble() - 0.5) * 10;
                values[i] = (float)(random.NextDouble() - 0.5) * 10;
            }

            cache.Write(layer, 0, capacity, keys, values);
        }

        cache.MarkFilled(0, capacity);
        return cache;
    }

    [Theory]
    [InlineData(DType.Float32)]
    [InlineData(DType.Float16)]
    [InlineData(DType.BFloat16)]
    public void ExportImport_InStorageDType_IsBitExact(DType storage)
    {
        KvCache source = Filled(storage);
        var bytes = new byte[source.GetExportByteCount(source.Capacity, storage)];
        source.Export(0, source.Capacity, storage, bytes);

        var target = new KvCache(2, 2, 4, source.Capacity, storage);
        target.Import(0, source.Capacity, storage, bytes);

        for (int layer = 0; layer < 2; layer++)
        {
            Assert.Equal(source.LayerKeys(layer), target.LayerKeys(layer));
            Assert.Equal(source.LayerValues(layer), target.LayerValues(layer));
        }
    }

    [Fact]
    public void Export_Layout_IsLayerKindTokenHeadDim()
    {
        KvCache cache = Filled(DType.Float32, capacity: 3);
        var bytes = new byte[cache.GetExportByteCount(2, DType.Float32)];
        cache.Export(1, 3, DType.Float32, bytes);
        float[] flat = new float[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, flat, 0, bytes.Length);

        // [layer 1][V][token 1 (position 2)][head 1][dim 3]
        int index = (((((1 * 2) + 1) * 2) + 1) * 2 + 1) * 4 + 3;
        Assert.Equal(cache.Values(1, 1)[(2 * 4) + 3], flat[index]);
        // [layer 0][K][token 0 (position 1)][head 0][dim 0]
        Assert.Equal(cache.Keys(0, 0)[4], flat[0]);
    }

    [Fact]
    public void Import_OutOfOrder_LengthCoversContiguousPrefixOnly()
    {
        KvCache source = Filled(DType.Float16, capacity: 9);
        var target = new KvCache(2, 2, 4, 9, DType.Float16);
        byte[] Chunk(int start, int end)
        {
            var b = new byte[source.GetExportByteCount(end - start, DType.Float16)];
            source.Export(start, end, DType.Float16, b);
            return b;
        }

        target.Import(6, 9, DType.Float16, Chunk(6, 9));
        Assert.Equal(0, target.Length);
        Assert.True(target.IsFilled(6));
        target.Import(3, 6, DType.Float16, Chunk(3, 6));
        Assert.Equal(0, target.Length);
        target.Import(0, 3, DType.Float16, Chunk(0, 3));
        Assert.Equal(9, target.Length);
        Assert.Equal(source.LayerKeys(1), target.LayerKeys(1));
    }

    [Fact]
    public void Import_WrongByteCount_Throws()
    {
        var cache = new KvCache(2, 2, 4, 8);
        ArgumentException ex = Assert.Throws<ArgumentException>(() => cache.Import(0, 2, DType.Float16, new byte[10]));
        Assert.Contains("need exactly", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Export_UnfilledPosition_Throws()
    {
        var cache = new KvCache(1, 1, 4, 8);
        Assert.Throws<InvalidOperationException>(() => cache.Export(0, 2, DType.Float32, new byte[cache.GetExportByteCount(2, DType.Float32)]));
    }

    [Fact]
    public void Truncate_ForgetsPositionsAfterLength()
    {
        KvCache cache = Filled(DType.Float32, capacity: 6);
        cache.Truncate(2);
        Assert.Equal(2, cache.Length);
        Assert.False(cache.IsFilled(4));
    }

    [Fact]
    public void Import_Float32IntoHalfStorage_RoundsToHalf()
    {
        var cache = new KvCache(1, 1, 4, 1, DType.Float16);
        float[] values = [1.0001f, 2.0f, 3.3333333f, -0.1f];
        byte[] bytes = new byte[cache.GetExportByteCount(1, DType.Float32)];
        for (int kind = 0; kind < 2; kind++)
        {
            Buffer.BlockCopy(values, 0, bytes, kind * 16, 16);
        }

        cache.Import(0, 1, DType.Float32, bytes);
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal((float)(Half)values[i], cache.Keys(0, 0)[i]);
        }
    }
}
