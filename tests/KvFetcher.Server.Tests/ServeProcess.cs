using System.Diagnostics;

namespace KvFetcher.Server.Tests;

/// <summary>
/// <c>kvfetch serve</c> as a child process (the built kvfetch.dll next to the tests, run with <c>dotnet</c>), with its
/// bound address read from what it prints. Disposing kills it if it still runs.
/// </summary>
internal sealed class ServeProcess : IDisposable
{
    private readonly Process _process;
    private readonly TaskCompletionSource<Uri> _address = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly System.Text.StringBuilder _output = new();
    private readonly System.Text.StringBuilder _error = new();

    private ServeProcess(Process process) => _process = process;

    public int Id => _process.Id;

    public bool HasExited => _process.HasExited;

    public int ExitCode => _process.ExitCode;

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    public string Error
    {
        get
        {
            lock (_error)
            {
                return _error.ToString();
            }
        }
    }

    public static ServeProcess Start(params string[] args)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = Path.GetTempPath(),
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "kvfetch.dll"));
        start.ArgumentList.Add("serve");
        foreach (string arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment.Remove("KVFETCH_TOKEN");
        var process = new Process { StartInfo = start };
        var serve = new ServeProcess(process);
        process.OutputDataReceived += (_, e) => serve.OnOutput(e.Data);
        process.ErrorDataReceived += (_, e) =>
        {
            lock (serve._error)
            {
                serve._error.AppendLine(e.Data);
            }
        };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return serve;
    }

    /// <summary>The first address it listens on, once it says so.</summary>
    public async Task<Uri> WaitForAddressAsync(CancellationToken cancellationToken)
    {
        Task exited = _process.WaitForExitAsync(cancellationToken);
        Task first = await Task.WhenAny(_address.Task, exited).WaitAsync(TimeSpan.FromSeconds(60), cancellationToken);
        return first == _address.Task
            ? await _address.Task
            : throw new InvalidOperationException($"kvfetch serve exited ({_process.ExitCode}) before listening: {Error}");
    }

    /// <summary>Waits for it to exit on its own.</summary>
    public async Task<int> WaitForExitAsync(CancellationToken cancellationToken)
    {
        await _process.WaitForExitAsync(cancellationToken).WaitAsync(TimeSpan.FromSeconds(60), cancellationToken);
        return _process.ExitCode;
    }

    /// <summary>Sends it a POSIX signal by its id.</summary>
    public void Signal(string signal)
    {
        using Process kill = Process.Start("kill", ["-s", signal, _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        kill.WaitForExit();
        Assert.Equal(0, kill.ExitCode);
    }

    /// <summary>SIGKILL: no chance to finish anything.</summary>
    public void KillHard()
    {
        _process.Kill();
        _process.WaitForExit();
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
            _process.WaitForExit();
        }

        _process.Dispose();
    }

    private void OnOutput(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
        }

        const string Prefix = "listening on ";
        if (line.StartsWith(Prefix, StringComparison.Ordinal))
        {
            _address.TrySetResult(new Uri(line[Prefix.Length..].Trim()));
        }
    }
}
