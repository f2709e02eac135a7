using System.Text;

namespace KvFetcher.Engine.Tokenization;

/// <summary>
/// Turns generated ids into text one id at a time. A byte-level token may end in the middle of a UTF-8 sequence
/// (one emoji can span several tokens), so the bytes of an incomplete character are held back until the tokens
/// that complete it arrive. Concatenating every <see cref="Append"/> result and the final <see cref="Flush"/>
/// gives exactly <see cref="TextTokenizer.Decode"/> of all the ids. Not thread-safe: one decoder per stream.
/// </summary>
public sealed class TokenStreamDecoder
{
    private readonly TextTokenizer _tokenizer;
    private readonly bool _skipSpecial;
    private readonly Decoder _utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private char[] _chars = new char[64];

    internal TokenStreamDecoder(TextTokenizer tokenizer, bool skipSpecial)
    {
        _tokenizer = tokenizer;
        _skipSpecial = skipSpecial;
    }

    /// <summary>Adds one id and returns the text it completes (often empty while a character is incomplete).</summary>
    public string Append(int id)
    {
        ReadOnlySpan<byte> bytes = _tokenizer.GetTokenBytes(id, _skipSpecial);
        if (bytes.IsEmpty)
        {
            return string.Empty;
        }

        int needed = _utf8.GetCharCount(bytes, flush: false);
        if (needed == 0)
        {
            _ = _utf8.GetChars(bytes, _chars, flush: false);
            return string.Empty;
        }

        if (needed > _chars.Length)
        {
            _chars = new char[Math.Max(needed, _chars.Length * 2)];
        }

        int written = _utf8.GetChars(bytes, _chars, flush: false);
        return new string(_chars, 0, written);
    }

    /// <summary>Ends the stream: bytes of a character that never completed come out as U+FFFD.</summary>
    public string Flush()
    {
        int written = _utf8.GetChars([], _chars, flush: true);
        return written == 0 ? string.Empty : new string(_chars, 0, written);
    }

    /// <summary>Forgets any held-back bytes, ready for a new stream.</summary>
    public void Reset() => _utf8.Reset();
}
