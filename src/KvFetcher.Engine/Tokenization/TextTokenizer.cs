using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;

namespace KvFetcher.Engine.Tokenization;

/// <summary>
/// A Hugging Face byte-level BPE tokenizer (<c>tokenizer.json</c>, as used by Llama 3, Qwen2 and GPT-2 style
/// models). Encoding follows the <c>tokenizers</c> pipeline: added tokens are split out of the raw text first,
/// the rest is normalized, pre-tokenized with the file's own split regex, and each piece's UTF-8 bytes are merged
/// by <see cref="BytePairMerger"/>. Decoding maps tokens back to bytes and then to UTF-8 text. Instances are
/// immutable and safe to share between threads.
/// </summary>
/// <remarks>
/// Encoding costs time linear in the text's length: the split regexes, normalization and the merges all are, and
/// a piece longer than <see cref="MaxPieceLength"/> characters (a run with no split point, such as a long string
/// of one letter) is merged in slices of that length, as tiktoken slices long runs, so no single merge works on
/// more than a bounded number of bytes. Pieces of ordinary text are far shorter, so they tokenize exactly as
/// Hugging Face <c>tokenizers</c> does; a longer piece may get other (equally valid) ids near the slice edges.
/// </remarks>
public sealed partial class TextTokenizer
{
    /// <summary>
    /// The most characters one pre-tokenized piece is merged as; longer pieces are merged in slices of this many
    /// characters (one fewer where a slice would end inside a surrogate pair).
    /// </summary>
    public const int MaxPieceLength = 16_384;

    // Pieces of ordinary text repeat (words), so the ids of short pieces are kept: up to MaxCachedPieces of them, first
    // come first kept (a bound, not an eviction policy).
    private const int CachedPieceLength = 24;
    private const int MaxCachedPieces = 1 << 16;

    private readonly BytePairMerger _bpe;
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _cachedPieces =
        new ConcurrentDictionary<string, int[]>(StringComparer.Ordinal).GetAlternateLookup<ReadOnlySpan<char>>();
    private int _cachedPieceCount;
    private readonly Dictionary<string, int> _vocabulary;
    private readonly bool _ignoreMerges;
    private readonly NormalizationForm? _normalization;
    private readonly PreTokenizerStep[] _preTokenizer;
    private readonly Dictionary<char, AddedToken[]> _addedByFirstChar;
    private readonly Dictionary<string, AddedToken> _addedByContent;
    private readonly byte[] _tokenBytes;
    private readonly int[] _tokenOffsets;
    private readonly bool[] _known;
    private readonly bool[] _special;

    /// <summary>Ids span [0, <see cref="VocabSize"/>): the highest id of the vocabulary or added tokens, plus one.</summary>
    public int VocabSize { get; }

    /// <summary>The beginning-of-sequence id, if the model has one.</summary>
    public int? BosId { get; }

    /// <summary>Ids that end generation: config.json's <c>eos_token_id</c> and tokenizer_config.json's <c>eos_token</c>.</summary>
    public IReadOnlySet<int> EosIds { get; }

    /// <summary>Whether <see cref="Encode"/> prepends <see cref="BosId"/> (when asked to add special tokens).</summary>
    public bool AddBos { get; }

    /// <summary>The model directory the tokenizer was loaded from.</summary>
    public string Directory { get; }

    /// <summary>
    /// No token stands for more than this many characters of input text, so a text of n characters encodes to at
    /// least n / <see cref="MaxCharactersPerToken"/> tokens: a server can refuse a prompt that cannot fit its
    /// context before encoding it. It is the longest token's length in bytes (a character is at least one UTF-8
    /// byte), times 4 under NFC (which can compose up to four characters into one), or <see cref="int.MaxValue"/>
    /// when an added token strips the whitespace around it (any amount of it).
    /// </summary>
    public int MaxCharactersPerToken { get; }

    /// <summary>
    /// Encodes <paramref name="text"/>. Added and special tokens written in the text (such as
    /// <c>&lt;|im_start|&gt;</c>) become their ids; with <paramref name="addSpecial"/>, <see cref="BosId"/> is
    /// prepended when <see cref="AddBos"/> is set.
    /// </summary>
    public int[] Encode(string text, bool addSpecial = true) => EncodeCancellable(text, addSpecial, CancellationToken.None);

    /// <summary>
    /// <see cref="Encode"/> for a caller that may stop waiting, such as a server whose client left:
    /// <paramref name="cancellationToken"/> is checked before each piece is merged, so a cancelled call ends
    /// within one piece's work.
    /// </summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public int[] EncodeCancellable(string text, bool addSpecial, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 2);
        if (addSpecial && AddBos && BosId is int bos)
        {
            ids.Add(bos);
        }

        int position = 0;
        while (position < text.Length)
        {
            if (TryFindAddedToken(text, position, out int start, out int end, out AddedToken? token))
            {
                EncodeSegment(text.AsSpan(position, start - position), ids, cancellationToken);
                ids.Add(token.Id);
                position = end;
            }
            else
            {
                EncodeSegment(text.AsSpan(position), ids, cancellationToken);
                break;
            }
        }

        return [.. ids];
    }

    /// <summary>
    /// Decodes <paramref name="ids"/> to text; bytes that do not form valid UTF-8 become U+FFFD. Ids that name no
    /// token are skipped, as Hugging Face does; with <paramref name="skipSpecial"/>, special tokens are too.
    /// </summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecial = false)
    {
        var bytes = new List<byte>(ids.Length * 4);
        foreach (int id in ids)
        {
            bytes.AddRange(GetTokenBytes(id, skipSpecial));
        }

        return Encoding.UTF8.GetString(CollectionsMarshal.AsSpan(bytes));
    }

    /// <summary>A decoder that turns ids into text one at a time, holding back incomplete UTF-8 sequences.</summary>
    public TokenStreamDecoder CreateStreamDecoder(bool skipSpecial = false) => new(this, skipSpecial);

    /// <summary>The id of an added or special token, given its text (e.g. <c>&lt;|eot_id|&gt;</c>).</summary>
    public int? GetAddedTokenId(string content)
    {
        ArgumentNullException.ThrowIfNull(content);
        return _addedByContent.TryGetValue(content, out AddedToken? token) ? token.Id : null;
    }

    /// <summary>Whether <paramref name="id"/> is a special token (skipped by <c>skipSpecial</c>).</summary>
    public bool IsSpecial(int id) => (uint)id < (uint)VocabSize && _special[id];

    /// <summary>The bytes that token <paramref name="id"/> stands for (empty for unknown or skipped ids).</summary>
    internal ReadOnlySpan<byte> GetTokenBytes(int id, bool skipSpecial)
    {
        if ((uint)id >= (uint)VocabSize || !_known[id] || (skipSpecial && _special[id]))
        {
            return [];
        }

        return _tokenBytes.AsSpan(_tokenOffsets[id], _tokenOffsets[id + 1] - _tokenOffsets[id]);
    }

    private void EncodeSegment(ReadOnlySpan<char> segment, List<int> ids, CancellationToken cancellationToken)
    {
        if (segment.IsEmpty)
        {
            return;
        }

        if (_normalization is NormalizationForm form)
        {
            PreTokenize(UnicodeNormalizer.Normalize(segment, form), 0, ids, cancellationToken);
        }
        else
        {
            PreTokenize(segment, 0, ids, cancellationToken);
        }
    }

    // Applies pre-tokenizer step 'step' and the ones after it to 'piece', depth first, and merges each final
    // piece as it comes: the pieces and their order are those of applying each step to all pieces in turn.
    private void PreTokenize(ReadOnlySpan<char> piece, int step, List<int> ids, CancellationToken cancellationToken)
    {
        if (step == _preTokenizer.Length)
        {
            EncodePiece(piece, ids, cancellationToken);
            return;
        }

        PreTokenizerStep current = _preTokenizer[step];
        if (current.AddPrefixSpace && !piece.StartsWith(' '))
        {
            piece = string.Concat(" ", piece);
        }

        if (current.Split is not Regex split)
        {
            PreTokenize(piece, step + 1, ids, cancellationToken);
            return;
        }

        int last = 0;
        foreach (ValueMatch match in split.EnumerateMatches(piece))
        {
            if (match.Length == 0)
            {
                continue;
            }

            if (match.Index > last)
            {
                PreTokenize(piece[last..match.Index], step + 1, ids, cancellationToken);
            }

            PreTokenize(piece.Slice(match.Index, match.Length), step + 1, ids, cancellationToken);
            last = match.Index + match.Length;
        }

        if (last < piece.Length)
        {
            PreTokenize(piece[last..], step + 1, ids, cancellationToken);
        }
    }

    private void EncodePiece(ReadOnlySpan<char> piece, List<int> ids, CancellationToken cancellationToken)
    {
        while (!piece.IsEmpty)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int length = piece.Length;
            if (length > MaxPieceLength)
            {
                length = char.IsHighSurrogate(piece[MaxPieceLength - 1]) ? MaxPieceLength - 1 : MaxPieceLength;
            }

            ReadOnlySpan<char> slice = piece[..length];
            if (slice.Length <= CachedPieceLength && _cachedPieces.TryGetValue(slice, out int[]? cached))
            {
                ids.AddRange(cached);
            }
            else
            {
                int start = ids.Count;
                if (!_ignoreMerges || !_vocabulary.TryGetValue(ByteLevelAlphabet.Encode(slice), out int whole))
                {
                    _bpe.Encode(slice, ids);
                }
                else
                {
                    ids.Add(whole);
                }

                if (slice.Length <= CachedPieceLength && Volatile.Read(ref _cachedPieceCount) < MaxCachedPieces
                    && _cachedPieces.TryAdd(slice, [.. CollectionsMarshal.AsSpan(ids)[start..]]))
                {
                    Interlocked.Increment(ref _cachedPieceCount);
                }
            }

            piece = piece[length..];
        }
    }

    // Leftmost-longest match of an added token at or after 'from', honouring single_word, lstrip and rstrip.
    private bool TryFindAddedToken(string text, int from, out int start, out int end, [NotNullWhen(true)] out AddedToken? token)
    {
        if (_addedByFirstChar.Count != 0)
        {
            for (int i = from; i < text.Length; i++)
            {
                if (!_addedByFirstChar.TryGetValue(text[i], out AddedToken[]? candidates))
                {
                    continue;
                }

                foreach (AddedToken candidate in candidates)
                {
                    string content = candidate.Content;
                    if (content.Length > text.Length - i || string.CompareOrdinal(text, i, content, 0, content.Length) != 0)
                    {
                        continue;
                    }

                    if (candidate.SingleWord
                        && ((i > 0 && IsWordChar(text[i - 1])) || (i + content.Length < text.Length && IsWordChar(text[i + content.Length]))))
                    {
                        continue;
                    }

                    start = i;
                    end = i + content.Length;
                    if (candidate.LStrip)
                    {
                        while (start > from && char.IsWhiteSpace(text[start - 1]))
                        {
                            start--;
                        }
                    }

                    if (candidate.RStrip)
                    {
                        while (end < text.Length && char.IsWhiteSpace(text[end]))
                        {
                            end++;
                        }
                    }

                    token = candidate;
                    return true;
                }
            }
        }

        start = end = 0;
        token = null;
        return false;
    }

    private static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || c == '_';

    private sealed record AddedToken(int Id, string Content, bool Special, bool SingleWord, bool LStrip, bool RStrip);

    /// <summary>One stage of the pre-tokenizer: a regex split (Isolated) or the ByteLevel step.</summary>
    private sealed record PreTokenizerStep(Regex? Split, bool AddPrefixSpace);
}
