using KvFetcher.Core;
using KvFetcher.Core.Containers;

namespace KvFetcher.Codecs.Tests.Containers;

/// <summary>
/// Randomized corruption of containers of every codec: truncations, bit flips and byte changes in the parameters and
/// payload, with the checksum recomputed so the mutation reaches the codec's decoder. Each must end in
/// <see cref="InvalidKvDataException"/> or a clean decode — never another exception, a crash or a hang.
/// </summary>
public class CodecFuzzTests(ITestOutputHelper output)
{
    private const int TotalMutations = 10_000;

    public static TheoryData<string> CodecNames
    {
        get
        {
            var data = new TheoryData<string>();
            foreach (IKvCodec codec in KvCodecs.All)
            {
                data.Add(codec.Name);
            }

            return data;
        }
    }

    [Theory]
    [MemberData(nameof(CodecNames))]
    public void Decode_ResealedMutations_OnlyDomainException(string name)
    {
        IKvCodec codec = KvCodecs.Get(name);
        if (codec.Id == CodecId.Kvtc)
        {
            // kvtc needs the model's transform loaded (calibration fits it); this one is fitted to the same real KV.
            _ = Transform.KvtcTestTransforms.ForRealKv;
        }

        int mutations = TotalMutations / KvCodecs.All.Count + 1;
        (byte[] container, ChunkExpectation expected, byte[] kv) = ChunkContainerTests.Build(codec, codec.DefaultLevel, tokens: 8);
        var destination = new byte[kv.Length];
        var random = new Random(name.Length * 7919);
        int refused = 0;
        for (int i = 0; i < mutations; i++)
        {
            byte[] mutated = Mutate(container, random);
            try
            {
                codec.DecodeContainer(mutated, expected, destination);
            }
            catch (InvalidKvDataException)
            {
                refused++;
            }
        }

        output.WriteLine($"{name}: {mutations} mutations, {refused} refused, {mutations - refused} decoded cleanly");
    }

    /// <summary>One random corruption of the body (parameters + payload), resealed with a valid checksum.</summary>
    private static byte[] Mutate(byte[] container, Random random)
    {
        int bodyStart = ChunkContainer.HeaderSize;
        int bodyEnd = container.Length - ChunkContainer.ChecksumSize;
        byte[] mutated = (byte[])container.Clone();
        switch (random.Next(4))
        {
            case 0:
                mutated[random.Next(bodyStart, bodyEnd)] ^= (byte)(1 << random.Next(8));
                break;
            case 1:
                for (int k = random.Next(1, 9); k > 0; k--)
                {
                    mutated[random.Next(bodyStart, bodyEnd)] = (byte)random.Next(256);
                }

                break;
            case 2:
                // Truncate the body and fix the payload length so the container is structurally valid.
                int cut = random.Next(1, Math.Max(2, bodyEnd - bodyStart));
                long payloadLength = BitConverter.ToInt64(container, 120);
                if (cut > payloadLength)
                {
                    goto case 0;
                }

                mutated = [.. container.AsSpan(0, bodyEnd - cut), .. new byte[ChunkContainer.ChecksumSize]];
                BitConverter.TryWriteBytes(mutated.AsSpan(120), payloadLength - cut);
                break;
            default:
                // Zero a run of bytes.
                int start = random.Next(bodyStart, bodyEnd);
                mutated.AsSpan(start, Math.Min(random.Next(1, 64), bodyEnd - start)).Clear();
                break;
        }

        ChunkContainerTests.Reseal(mutated);
        return mutated;
    }
}
