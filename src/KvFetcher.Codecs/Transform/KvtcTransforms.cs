using KvFetcher.Core;

namespace KvFetcher.Codecs.Transform;

/// <summary>
/// The kvtc transforms this process has loaded (each model's, checked against its fingerprint when loaded:
/// <see cref="KvtcTransform.TryLoadFrom"/>). The shared codec (<see cref="TransformCodec.Instance"/>) decodes a chunk
/// only with the transform whose id the chunk names, and encodes with the transform registered last for the chunk's
/// dimensions (a process serves one model; a second model of the same dimensions needs its own bound
/// <see cref="TransformCodec"/>).
/// </summary>
public static class KvtcTransforms
{
    private static readonly Lock s_lock = new();
    private static readonly List<KvtcTransform> s_loaded = [];

    /// <summary>Transforms loaded.</summary>
    public static int Count
    {
        get
        {
            lock (s_lock)
            {
                return s_loaded.Count;
            }
        }
    }

    /// <summary>Adds <paramref name="transform"/> (again: moves it last, so it encodes its dimensions' chunks).</summary>
    public static void Register(KvtcTransform transform)
    {
        ArgumentNullException.ThrowIfNull(transform);
        lock (s_lock)
        {
            s_loaded.RemoveAll(t => t.Id.SequenceEqual(transform.Id));
            s_loaded.Add(transform);
        }
    }

    /// <summary>The loaded transform with id <paramref name="id"/>, or null.</summary>
    public static KvtcTransform? Find(ReadOnlySpan<byte> id)
    {
        lock (s_lock)
        {
            foreach (KvtcTransform t in s_loaded)
            {
                if (t.Id.SequenceEqual(id))
                {
                    return t;
                }
            }

            return null;
        }
    }

    /// <summary>The transform registered last that fits <paramref name="shape"/>, or null.</summary>
    public static KvtcTransform? ForEncoding(KvShape shape)
    {
        lock (s_lock)
        {
            for (int i = s_loaded.Count - 1; i >= 0; i--)
            {
                if (s_loaded[i].Fits(shape))
                {
                    return s_loaded[i];
                }
            }

            return null;
        }
    }
}
