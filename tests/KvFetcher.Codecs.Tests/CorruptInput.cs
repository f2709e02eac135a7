using System.Buffers;
using KvFetcher.Core;

namespace KvFetcher.Codecs.Tests;

/// <summary>
/// Hostile input for a codec's decoder: every truncation of an encoded chunk's parameters and payload must be refused,
/// and bit flips either refused or decoded to some values, never another exception, a crash or a hang.
/// </summary>
internal static class CorruptInput
{
    /// <summary>
    /// Encodes <paramref name="kv"/> at <paramref name="level"/>, then decodes truncated and bit-flipped copies
    /// (<paramref name="flipCases"/> of them, 1-3 flips each): every refusal is an <see cref="InvalidKvDataException"/>
    /// whose message starts with <paramref name="messagePrefix"/>, every truncation is refused, and more than
    /// <paramref name="minFlipsCaught"/> flips are caught. Returns a line describing what happened.
    /// </summary>
    public static string AssertOnlyInvalidKvData(IKvCodec codec, byte[] kv, KvShape shape, int level, string messagePrefix, int flipCases = 3000, int minFlipsCaught = 300)
    {
        var parameters = new ArrayBufferWriter<byte>();
        var payload = new ArrayBufferWriter<byte>();
        codec.Encode(kv, shape, DType.Float16, 0, level, parameters, payload);
        byte[] goodParameters = parameters.WrittenSpan.ToArray();
        byte[] goodPayload = payload.WrittenSpan.ToArray();
        var destination = new byte[kv.Length];
        int rejected = 0;
        int cases = 0;

        void Check(byte[] p, byte[] d)
        {
            cases++;
            try
            {
                codec.Decode(p, d, shape, DType.Float16, 0, level, destination);
            }
            catch (InvalidKvDataException ex)
            {
                Assert.StartsWith(messagePrefix, ex.Message, StringComparison.Ordinal);
                rejected++;
            }
        }

        for (int length = 0; length < goodParameters.Length; length += 1 + (length / 8))
        {
            Check(goodParameters[..length], goodPayload);
        }

        for (int length = 0; length < goodPayload.Length; length += 1 + (length / 16))
        {
            Check(goodParameters, goodPayload[..length]);
        }

        int truncations = cases;
        Assert.Equal(truncations, rejected);

        var random = new Random(7);
        for (int i = 0; i < flipCases; i++)
        {
            byte[] p = (byte[])goodParameters.Clone();
            byte[] d = (byte[])goodPayload.Clone();
            byte[] target = random.Next(4) == 0 ? p : d;
            for (int flips = 1 + random.Next(3); flips > 0; flips--)
            {
                int bit = random.Next(target.Length * 8);
                target[bit >> 3] ^= (byte)(1 << (bit & 7));
            }

            Check(p, d);
        }

        Assert.True(rejected > truncations + minFlipsCaught, $"only {rejected - truncations} of the bit flips were caught");
        return $"{truncations} truncations and {cases - truncations} bit-flip cases: {rejected} rejected with InvalidKvDataException, the rest decoded to some values";
    }
}
