using KvFetcher.Codecs.Transform;
using KvFetcher.Core;

namespace KvFetcher.Fetch.Fetching;

/// <summary>
/// What the fetcher has measured, kept across requests (EWMA): the link's bandwidth, each variant's stored size and
/// decode time per chunk, restore time, and the engine's compute time per chunk by position (prefill of a chunk costs
/// more the later it sits). Decode and restore run on the CPU next to the engine, so their times are kept twice: while
/// the engine computes (they share the cores) and while it is idle or waiting. Until a rate is measured, a conservative
/// prior stands in. Thread-safe.
/// </summary>
public sealed class FetchRates
{
    private const double Alpha = 0.5;
    private readonly Lock _lock = new();
    private readonly Dictionary<KvVariant, double> _sizes = [];
    private readonly Dictionary<(KvVariant, bool), double> _decode = [];
    private double[] _compute = new double[64];
    private double _bandwidth = 100e6;
    private double _restoreIdle = 0.002;
    private double _restoreBusy;
    private bool _bandwidthMeasured;

    /// <summary>The estimated link bandwidth in bytes per second (all transfers of a request together).</summary>
    public double BandwidthBytesPerSecond
    {
        get
        {
            lock (_lock)
            {
                return _bandwidth;
            }
        }
    }

    /// <summary>Records a transfer of <paramref name="bytes"/> that took <paramref name="seconds"/> while <paramref name="concurrent"/> transfers shared the link.</summary>
    public void ObserveTransfer(long bytes, double seconds, int concurrent)
    {
        if (bytes <= 0 || seconds <= 0)
        {
            return;
        }

        double rate = bytes / seconds * Math.Max(1, concurrent);
        lock (_lock)
        {
            _bandwidth = _bandwidthMeasured ? (Alpha * rate) + ((1 - Alpha) * _bandwidth) : rate;
            _bandwidthMeasured = true;
        }
    }

    /// <summary>
    /// Records a stall: a transfer predicted to take <paramref name="predictedSeconds"/> had not arrived after
    /// <paramref name="waitedSeconds"/>. The link is at most that fast, so the bandwidth estimate drops in proportion
    /// (later predictions then favour computing until transfers are measured faster again).
    /// </summary>
    public void ObserveStall(double predictedSeconds, double waitedSeconds)
    {
        if (predictedSeconds <= 0 || waitedSeconds <= predictedSeconds)
        {
            return;
        }

        lock (_lock)
        {
            _bandwidth *= predictedSeconds / waitedSeconds;
            _bandwidthMeasured = true;
        }
    }

    /// <summary>Sets the bandwidth estimate (a caller that knows its link).</summary>
    public void SetBandwidth(double bytesPerSecond)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytesPerSecond);
        lock (_lock)
        {
            _bandwidth = bytesPerSecond;
            _bandwidthMeasured = true;
        }
    }

    /// <summary>Records a decoded chunk: its container size and decode time, and whether the engine was computing meanwhile.</summary>
    public void ObserveVariant(KvVariant variant, long containerBytes, int chunkBytes, double decodeSeconds, bool engineBusy = false)
    {
        double fraction = (double)containerBytes / chunkBytes;
        lock (_lock)
        {
            _sizes[variant] = _sizes.TryGetValue(variant, out double size) ? (Alpha * fraction) + ((1 - Alpha) * size) : fraction;
            _decode[(variant, engineBusy)] = _decode.TryGetValue((variant, engineBusy), out double decode) ? (Alpha * decodeSeconds) + ((1 - Alpha) * decode) : decodeSeconds;
        }
    }

    public void ObserveRestore(double seconds, bool engineBusy = false)
    {
        lock (_lock)
        {
            if (engineBusy)
            {
                _restoreBusy = _restoreBusy == 0 ? seconds : (Alpha * seconds) + ((1 - Alpha) * _restoreBusy);
            }
            else
            {
                _restoreIdle = (Alpha * seconds) + ((1 - Alpha) * _restoreIdle);
            }
        }
    }

    public void ObserveCompute(int chunk, double seconds)
    {
        lock (_lock)
        {
            if (chunk >= _compute.Length)
            {
                Array.Resize(ref _compute, Math.Max(chunk + 1, _compute.Length * 2));
            }

            _compute[chunk] = _compute[chunk] == 0 ? seconds : (Alpha * seconds) + ((1 - Alpha) * _compute[chunk]);
        }
    }

    /// <summary>Predicted seconds to compute chunk <paramref name="chunk"/> of <paramref name="chunkTokens"/> tokens.</summary>
    public double ComputeSeconds(int chunk, int chunkTokens)
    {
        lock (_lock)
        {
            if (chunk < _compute.Length && _compute[chunk] > 0)
            {
                return _compute[chunk];
            }

            // The nearest measured chunk before it, scaled by position (attention grows linearly with it).
            for (int i = Math.Min(chunk, _compute.Length) - 1; i >= 0; i--)
            {
                if (_compute[i] > 0)
                {
                    return _compute[i] * (1 + ((chunk - i) * 0.02));
                }
            }

            return chunkTokens * 0.0005;
        }
    }

    /// <summary>
    /// Predicted (transfer, decode, restore) seconds of one chunk of <paramref name="chunkBytes"/> as
    /// <paramref name="variant"/>, with the engine computing alongside (<paramref name="engineBusy"/>) or not.
    /// </summary>
    public (double Transfer, double Decode, double Restore) ChunkSeconds(KvVariant variant, int chunkBytes, bool engineBusy = false)
    {
        lock (_lock)
        {
            (double priorFraction, double priorDecode) = Prior(variant, chunkBytes);
            double fraction = _sizes.TryGetValue(variant, out double size) ? size : priorFraction;
            double idle = _decode.TryGetValue((variant, false), out double measuredIdle) ? measuredIdle : priorDecode;
            double decode = !engineBusy ? idle : _decode.TryGetValue((variant, true), out double measuredBusy) ? measuredBusy : idle * 1.5;
            double restore = !engineBusy ? _restoreIdle : _restoreBusy > 0 ? _restoreBusy : _restoreIdle * 1.5;
            return (fraction * chunkBytes / _bandwidth, decode, restore);
        }
    }

    /// <summary>Conservative priors until a variant has been fetched once (from docs/PERFORMANCE.md's codec table).</summary>
    private static (double SizeFraction, double DecodeSeconds) Prior(KvVariant variant, int chunkBytes)
    {
        double megabytes = chunkBytes / 1e6;
        return variant.Codec switch
        {
            CodecId.Raw => (1.0, 0.0002 * megabytes),
            CodecId.Exact => (0.85, 0.0035 * megabytes),
            CodecId.CacheGen => (variant.Level switch { 0 => 0.37, 1 => 0.24, _ => 0.14 }, 0.0065 * megabytes),
            CodecId.CacheGenP => (0.46 - (0.035 * variant.Level), 0.0085 * megabytes),
            CodecId.Kvtc => ((KvtcTransform.DefaultLevelBits[Math.Min((int)variant.Level, KvtcTransform.LevelCount - 1)] + 0.4) / 16, 0.02 * megabytes),
            _ => (Math.Min(1.2, variant.Level / 16.0 * 1.17), 0.025 * megabytes),
        };
    }
}
