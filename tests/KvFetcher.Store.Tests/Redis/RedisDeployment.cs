using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace KvFetcher.Store.Tests.Redis;

/// <summary>
/// Real <c>redis-server</c> processes on free loopback ports in a temporary folder, persistence off: one server, or a
/// cluster of primaries joined with <c>redis-cli --cluster create</c>. Disposing kills them and removes the folder.
/// Free of xunit so the store benchmark can link it too.
/// </summary>
internal sealed class RedisDeployment : IAsyncDisposable
{
    private static readonly TimeSpan s_startTimeout = TimeSpan.FromSeconds(20);

    private readonly List<Process> _servers = [];
    private readonly List<int> _ports = [];
    private readonly List<int> _busPorts = [];
    private readonly string _directory;
    private readonly string _cli;

    private RedisDeployment(string directory, string cli, bool cluster, bool durable)
    {
        _directory = directory;
        _cli = cli;
        IsCluster = cluster;
        IsDurable = durable;
    }

    /// <summary>Whether every acknowledged write is on disk first (append-only file, fsync on every write).</summary>
    public bool IsDurable { get; }

    public bool IsCluster { get; }

    public IReadOnlyList<int> Ports => _ports;

    /// <summary><c>127.0.0.1:port,…</c> for every server.</summary>
    public string ConnectionString => string.Join(',', _ports.Select(p => $"127.0.0.1:{p}"));

    /// <summary>
    /// One server, in memory without persistence; <paramref name="durable"/>: with an append-only file fsync'ed on every
    /// write (<c>appendfsync always</c>), the durability of a store that flushes every put.
    /// </summary>
    public static Task<RedisDeployment> StartSingleAsync(bool durable = false, CancellationToken cancellationToken = default) =>
        StartAsync(1, cluster: false, durable, cancellationToken);

    public static Task<RedisDeployment> StartClusterAsync(int primaries = 3, CancellationToken cancellationToken = default) =>
        StartAsync(primaries, cluster: true, durable: false, cancellationToken);

    /// <summary>The full path of a Redis program, or an exception saying how to install it.</summary>
    public static string FindProgram(string name)
    {
        IEnumerable<string> folders = (Environment.GetEnvironmentVariable("PATH") ?? string.Empty)
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Concat(["/usr/bin", "/usr/sbin", "/usr/local/bin"]);
        foreach (string folder in folders)
        {
            string path = Path.Combine(folder, name);
            if (File.Exists(path))
            {
                return path;
            }
        }

        throw new InvalidOperationException(
            $"'{name}' is not installed (searched PATH, /usr/bin, /usr/sbin, /usr/local/bin). The Redis store tests and " +
            "benchmark run a real Redis: install it with 'apt-get install redis-server' (tools/setup.sh does).");
    }

    /// <summary>The processor time the running servers have used (for benchmarks that compare CPU per byte).</summary>
    public TimeSpan ServerProcessorTime
    {
        get
        {
            TimeSpan total = TimeSpan.Zero;
            foreach (Process server in _servers)
            {
                server.Refresh();
                total += server.TotalProcessorTime;
            }

            return total;
        }
    }

    /// <summary>Kills every server at once (SIGKILL), as a crash would.</summary>
    public void Kill()
    {
        foreach (Process server in _servers)
        {
            try
            {
                server.Kill();
            }
            catch (InvalidOperationException)
            {
                // Already exited.
            }
        }

        foreach (Process server in _servers)
        {
            server.WaitForExit();
        }
    }

    /// <summary>
    /// Starts the killed servers again on their ports (empty: persistence is off; a cluster keeps its slot map in its
    /// nodes files) and waits until they serve.
    /// </summary>
    public async Task RestartAsync(CancellationToken cancellationToken = default)
    {
        Kill();
        foreach (Process old in _servers)
        {
            old.Dispose();
        }

        _servers.Clear();
        string program = FindProgram("redis-server");
        for (int i = 0; i < _ports.Count; i++)
        {
            Process process = Launch(program, _ports[i], _busPorts[i]);
            if (!await WaitForPongAsync(process, _ports[i], cancellationToken).ConfigureAwait(false))
            {
                throw new InvalidOperationException($"redis-server did not restart on port {_ports[i]}.");
            }
        }

        if (IsCluster)
        {
            await WaitForClusterAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public ValueTask DisposeAsync()
    {
        Kill();
        foreach (Process server in _servers)
        {
            server.Dispose();
        }

        _servers.Clear();
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
            // A server's last log line racing the delete: the folder is in the temp area either way.
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>Runs <c>redis-cli</c> with <paramref name="arguments"/>; its standard output, or an exception with its errors.</summary>
    public async Task<string> CliAsync(CancellationToken cancellationToken, params string[] arguments)
    {
        var start = new ProcessStartInfo(_cli)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using Process cli = Process.Start(start) ?? throw new InvalidOperationException($"Cannot start {_cli}.");
        cli.StandardInput.Close();
        Task<string> output = cli.StandardOutput.ReadToEndAsync(cancellationToken);
        Task<string> errors = cli.StandardError.ReadToEndAsync(cancellationToken);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(s_startTimeout);
        try
        {
            await cli.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            cli.Kill();
            throw;
        }

        string text = await output.ConfigureAwait(false);
        if (cli.ExitCode != 0)
        {
            throw new InvalidOperationException(
                $"redis-cli {string.Join(' ', arguments)} exited with {cli.ExitCode}: {text}{await errors.ConfigureAwait(false)}");
        }

        return text;
    }

    private static async Task<RedisDeployment> StartAsync(int primaries, bool cluster, bool durable, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(primaries, cluster ? 3 : 1);
        string server = FindProgram("redis-server");
        string cli = FindProgram("redis-cli");
        string directory = Path.Combine(Path.GetTempPath(), $"kvf-redis-{Guid.NewGuid():N}");
        Directory.CreateDirectory(directory);
        var deployment = new RedisDeployment(directory, cli, cluster, durable);
        try
        {
            for (int i = 0; i < primaries; i++)
            {
                await deployment.StartServerAsync(server, cancellationToken).ConfigureAwait(false);
            }

            if (cluster)
            {
                await deployment.CreateClusterAsync(cancellationToken).ConfigureAwait(false);
            }

            return deployment;
        }
        catch
        {
            await deployment.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static int FreePort(HashSet<int> taken)
    {
        while (true)
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            int port = ((IPEndPoint)listener.LocalEndpoint).Port;
            if (taken.Add(port))
            {
                return port;
            }
        }
    }

    /// <summary>Starts one server (a few tries, in case another process takes the port first) and waits for PONG.</summary>
    private async Task StartServerAsync(string program, CancellationToken cancellationToken)
    {
        var taken = new HashSet<int>(_ports.Concat(_busPorts));
        for (int attempt = 1; ; attempt++)
        {
            int port = FreePort(taken);
            int busPort = FreePort(taken);
            Process process = Launch(program, port, busPort);
            if (await WaitForPongAsync(process, port, cancellationToken).ConfigureAwait(false))
            {
                _ports.Add(port);
                _busPorts.Add(busPort);
                return;
            }

            _servers.Remove(process);
            process.Dispose();
            if (attempt == 3)
            {
                string log = LogOf(port);
                string tail = File.Exists(log) ? await File.ReadAllTextAsync(log, cancellationToken).ConfigureAwait(false) : "(no log)";
                throw new InvalidOperationException($"redis-server on port {port} did not start: {tail}");
            }
        }
    }

    private Process Launch(string program, int port, int busPort)
    {
        var start = new ProcessStartInfo(program)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = _directory,
        };
        string[] arguments =
        [
            "--port", Invariant(port), "--bind", "127.0.0.1", "--protected-mode", "no", "--daemonize", "no",
            "--dir", _directory, "--logfile", LogOf(port), "--save", string.Empty, "--appendonly", IsDurable ? "yes" : "no",
            "--dbfilename", $"dump-{port}.rdb",
            .. (IsDurable ? (string[])["--appendfsync", "always", "--appendfilename", $"append-{port}.aof"] : []),
        ];
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        if (IsCluster)
        {
            foreach (string argument in (string[])["--cluster-enabled", "yes", "--cluster-config-file", $"nodes-{port}.conf",
                "--cluster-port", Invariant(busPort), "--cluster-node-timeout", "2000"])
            {
                start.ArgumentList.Add(argument);
            }
        }

        Process process = Process.Start(start) ?? throw new InvalidOperationException($"Cannot start {program}.");
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _servers.Add(process);
        return process;
    }

    private string LogOf(int port) => Path.Combine(_directory, $"redis-{port}.log");

    private async Task<bool> WaitForPongAsync(Process process, int port, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < s_startTimeout)
        {
            if (process.HasExited)
            {
                return false;
            }

            try
            {
                string reply = await CliAsync(cancellationToken, "-h", "127.0.0.1", "-p", Invariant(port), "ping").ConfigureAwait(false);
                if (reply.Trim() == "PONG")
                {
                    return true;
                }
            }
            catch (InvalidOperationException)
            {
                // Not listening yet.
            }

            await Task.Delay(20, cancellationToken).ConfigureAwait(false);
        }

        process.Kill();
        return false;
    }

    private async Task CreateClusterAsync(CancellationToken cancellationToken)
    {
        List<string> arguments = ["--cluster", "create"];
        arguments.AddRange(_ports.Select(p => $"127.0.0.1:{p}"));
        arguments.AddRange(["--cluster-replicas", "0", "--cluster-yes"]);
        await CliAsync(cancellationToken, [.. arguments]).ConfigureAwait(false);
        await WaitForClusterAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task WaitForClusterAsync(CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        foreach (int port in _ports)
        {
            while (true)
            {
                string info = await CliAsync(cancellationToken, "-h", "127.0.0.1", "-p", Invariant(port), "cluster", "info").ConfigureAwait(false);
                if (info.Contains("cluster_state:ok", StringComparison.Ordinal)
                    && info.Contains($"cluster_known_nodes:{Invariant(_ports.Count)}", StringComparison.Ordinal))
                {
                    break;
                }

                if (clock.Elapsed > s_startTimeout)
                {
                    throw new InvalidOperationException($"The Redis cluster on ports {ConnectionString} did not reach cluster_state:ok: {info}");
                }

                await Task.Delay(50, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private static string Invariant(int value) => value.ToString(CultureInfo.InvariantCulture);
}
