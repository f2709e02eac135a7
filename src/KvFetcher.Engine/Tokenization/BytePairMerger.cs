using System.Buffers;
using System.Text;
using KvFetcher.Engine.Model;

namespace KvFetcher.Engine.Tokenization;

/// <summary>
/// The merge step of byte-level BPE, as Hugging Face <c>tokenizers</c> runs it: a piece's UTF-8 bytes start as
/// one symbol each, then the adjacent pair with the lowest merge rank is merged (the leftmost of equal pairs
/// first) until no adjacent pair has a merge. Symbols form a linked list over their first byte's position and
/// candidate merges sit in a binary heap keyed by (rank, position), so a piece of n bytes costs O(n log n): each
/// merge removes a symbol and adds at most two candidates, and stale candidates are recognized when they come
/// out. Scratch space is on the stack for short pieces and pooled for long ones; nothing is kept between calls,
/// so one instance serves any number of threads.
/// </summary>
internal sealed class BytePairMerger
{
    // Pieces up to this many bytes merge in stack scratch: 4 ints and 3 longs a byte, under 7 KiB.
    private const int StackBytes = 192;

    private readonly int[] _byteIds = new int[256];

    // Key: left id << 32 | right id. Value: rank << 32 | merged id.
    private readonly Dictionary<long, long> _merges;

    /// <summary>
    /// Builds the merge table. <paramref name="merges"/> are in rank order; a pair listed twice takes its last
    /// rank, as in Hugging Face's loader. Every byte symbol, both sides of every merge and every merge result
    /// must be in <paramref name="vocabulary"/>.
    /// </summary>
    /// <exception cref="InvalidModelException">A merge names a token that is not in the vocabulary.</exception>
    public BytePairMerger(Dictionary<string, int> vocabulary, IReadOnlyList<(string Left, string Right)> merges, string path)
    {
        for (int b = 0; b < 256; b++)
        {
            // The loader has checked that all 256 byte symbols are present.
            _byteIds[b] = vocabulary[ByteLevelAlphabet.ToChar((byte)b).ToString()];
        }

        _merges = new Dictionary<long, long>(merges.Count);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            (string left, string right) = merges[rank];
            int leftId = Lookup(vocabulary, left, rank, path);
            int rightId = Lookup(vocabulary, right, rank, path);
            int mergedId = Lookup(vocabulary, left + right, rank, path);
            _merges[Pair(leftId, rightId)] = ((long)rank << 32) | (uint)mergedId;
        }
    }

    /// <summary>Appends the ids of <paramref name="piece"/>'s merged UTF-8 bytes to <paramref name="ids"/>.</summary>
    public void Encode(ReadOnlySpan<char> piece, List<int> ids)
    {
        if (piece.IsEmpty)
        {
            return;
        }

        int maxBytes = Encoding.UTF8.GetMaxByteCount(piece.Length);
        if (maxBytes <= StackBytes)
        {
            // Sized to the piece (most are a few bytes): stack space is cleared on entry.
            Span<byte> bytes = stackalloc byte[maxBytes];
            int count = Encoding.UTF8.GetBytes(piece, bytes);
            Span<int> ints = stackalloc int[3 * count];
            Span<long> heap = stackalloc long[3 * count];
            Merge(bytes[..count], ints, heap, ids);
            return;
        }

        byte[] pooledBytes = ArrayPool<byte>.Shared.Rent(maxBytes);
        int[]? pooledInts = null;
        long[]? pooledHeap = null;
        try
        {
            int count = Encoding.UTF8.GetBytes(piece, pooledBytes);
            pooledInts = ArrayPool<int>.Shared.Rent(3 * count);
            pooledHeap = ArrayPool<long>.Shared.Rent(3 * count);
            Merge(pooledBytes.AsSpan(0, count), pooledInts.AsSpan(0, 3 * count), pooledHeap.AsSpan(0, 3 * count), ids);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(pooledBytes);
            if (pooledInts is not null)
            {
                ArrayPool<int>.Shared.Return(pooledInts);
            }

            if (pooledHeap is not null)
            {
                ArrayPool<long>.Shared.Return(pooledHeap);
            }
        }
    }

    private static long Pair(int left, int right) => ((long)left << 32) | (uint)right;

    private static int Lookup(Dictionary<string, int> vocabulary, string token, int rank, string path) =>
        vocabulary.TryGetValue(token, out int id)
            ? id
            : throw new InvalidModelException(
                path, $"field 'model.merges' entry {rank} needs the token '{token}', which is not in 'model.vocab'.");

    // ints holds three arrays of n: the symbol id at each position (-1 once merged into its left neighbour), and
    // the next and previous live positions. heap holds (rank << 32 | position) candidates; at most n - 1 start
    // and each of the at most n - 1 merges adds two, so 3n is enough.
    private void Merge(ReadOnlySpan<byte> bytes, Span<int> ints, Span<long> heap, List<int> ids)
    {
        int n = bytes.Length;
        Span<int> symbols = ints[..n];
        Span<int> next = ints.Slice(n, n);
        Span<int> previous = ints.Slice(2 * n, n);
        for (int i = 0; i < n; i++)
        {
            symbols[i] = _byteIds[bytes[i]];
            next[i] = i + 1;
            previous[i] = i - 1;
        }

        var queue = new MinHeap(heap);
        for (int i = 0; i + 1 < n; i++)
        {
            if (_merges.TryGetValue(Pair(symbols[i], symbols[i + 1]), out long merge))
            {
                queue.Push((merge & ~0xFFFF_FFFFL) | (uint)i);
            }
        }

        while (queue.TryPop(out long candidate))
        {
            int position = (int)(uint)candidate;
            int right = next[position];
            if (symbols[position] < 0 || right >= n)
            {
                continue;
            }

            // A candidate is stale when either side has merged since it was pushed: its pair now has another
            // rank, or none.
            if (!_merges.TryGetValue(Pair(symbols[position], symbols[right]), out long merge) || (merge >>> 32) != (candidate >>> 32))
            {
                continue;
            }

            symbols[position] = (int)(uint)merge;
            symbols[right] = -1;
            int after = next[right];
            next[position] = after;
            if (after < n)
            {
                previous[after] = position;
            }

            int before = previous[position];
            if (before >= 0 && _merges.TryGetValue(Pair(symbols[before], symbols[position]), out long left))
            {
                queue.Push((left & ~0xFFFF_FFFFL) | (uint)before);
            }

            if (after < n && _merges.TryGetValue(Pair(symbols[position], symbols[after]), out long following))
            {
                queue.Push((following & ~0xFFFF_FFFFL) | (uint)position);
            }
        }

        for (int i = 0; i < n; i = next[i])
        {
            ids.Add(symbols[i]);
        }
    }

    /// <summary>A binary min-heap of longs over caller-provided storage.</summary>
    private ref struct MinHeap(Span<long> storage)
    {
        private readonly Span<long> _items = storage;
        private int _count;

        public void Push(long value)
        {
            int i = _count++;
            while (i > 0)
            {
                int parent = (i - 1) >> 1;
                if (_items[parent] <= value)
                {
                    break;
                }

                _items[i] = _items[parent];
                i = parent;
            }

            _items[i] = value;
        }

        public bool TryPop(out long value)
        {
            if (_count == 0)
            {
                value = 0;
                return false;
            }

            value = _items[0];
            long last = _items[--_count];
            int i = 0;
            while (true)
            {
                int child = (2 * i) + 1;
                if (child >= _count)
                {
                    break;
                }

                if (child + 1 < _count && _items[child + 1] < _items[child])
                {
                    child++;
                }

                if (last <= _items[child])
                {
                    break;
                }

                _items[i] = _items[child];
                i = child;
            }

            if (_count > 0)
            {
                _items[i] = last;
            }

            return true;
        }
    }
}
