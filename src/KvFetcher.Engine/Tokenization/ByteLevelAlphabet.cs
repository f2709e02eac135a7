using System.Buffers;
using System.Text;

namespace KvFetcher.Engine.Tokenization;

/// <summary>
/// GPT-2's byte-level alphabet: every byte value has a printable stand-in character, so a byte-level BPE
/// vocabulary is a set of strings. Printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves;
/// the other 68 byte values take U+0100, U+0101, ... in byte order (so ' ' is 'Ġ' and '\n' is 'Ċ').
/// </summary>
internal static class ByteLevelAlphabet
{
    private static readonly char[] s_byteToChar = BuildByteToChar();
    private static readonly short[] s_charToByte = BuildCharToByte(s_byteToChar);

    /// <summary>The stand-in character of <paramref name="value"/>.</summary>
    public static char ToChar(byte value) => s_byteToChar[value];

    /// <summary>The byte that <paramref name="c"/> stands for, if it is in the alphabet.</summary>
    public static bool TryGetByte(char c, out byte value)
    {
        if (c < s_charToByte.Length && s_charToByte[c] >= 0)
        {
            value = (byte)s_charToByte[c];
            return true;
        }

        value = 0;
        return false;
    }

    /// <summary>The alphabet form of <paramref name="text"/>'s UTF-8 bytes.</summary>
    public static string Encode(ReadOnlySpan<char> text)
    {
        byte[] bytes = ArrayPool<byte>.Shared.Rent(Encoding.UTF8.GetMaxByteCount(text.Length));
        try
        {
            int written = Encoding.UTF8.GetBytes(text, bytes);
            return string.Create(written, bytes, static (destination, source) =>
            {
                for (int i = 0; i < destination.Length; i++)
                {
                    destination[i] = s_byteToChar[source[i]];
                }
            });
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bytes);
        }
    }

    /// <summary>
    /// The bytes a token string stands for, as Hugging Face's ByteLevel decoder reads it: each character mapped
    /// back to its byte, or, when any character is outside the alphabet, the string's own UTF-8 bytes.
    /// </summary>
    public static byte[] Decode(string token)
    {
        byte[] bytes = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
        {
            if (!TryGetByte(token[i], out bytes[i]))
            {
                return Encoding.UTF8.GetBytes(token);
            }
        }

        return bytes;
    }

    private static char[] BuildByteToChar()
    {
        char[] map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[b] = printable ? (char)b : (char)next++;
        }

        return map;
    }

    private static short[] BuildCharToByte(char[] byteToChar)
    {
        short[] map = new short[512];
        map.AsSpan().Fill(-1);
        for (int b = 0; b < 256; b++)
        {
            map[byteToChar[b]] = (short)b;
        }

        return map;
    }
}
