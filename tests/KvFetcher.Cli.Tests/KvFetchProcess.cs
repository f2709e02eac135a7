using System.Diagnostics;

namespace KvFetcher.Cli.Tests;

/// <summary>Runs the built <c>kvfetch</c> as a separate process, as a user would, and captures what it prints.</summary>
internal static class KvFetchProcess
{
    public static (int ExitCode, string Output, string Error) Run(params string[] args) => RunWith(new Dictionary<string, string>(), args);

    /// <summary>Like <see cref="Run"/>, with <paramref name="environment"/> set for the process.</summary>
    public static (int ExitCode, string Output, string Error) RunWith(IReadOnlyDictionary<string, string> environment, params string[] args)
    {
        string cli = Path.Combine(AppContext.BaseDirectory, "kvfetch.dll");
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = Path.GetTempPath(),
        };
        start.ArgumentList.Add(cli);
        foreach (string arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment.Remove("KVFETCH_MODEL");
        start.Environment.Remove("KVFETCH_TOKEN");
        foreach ((string name, string value) in environment)
        {
            start.Environment[name] = value;
        }

        using Process process = Process.Start(start)!;
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        Task<string> error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"kvfetch {string.Join(' ', args)} did not finish in 3 minutes.");
        }

        return (process.ExitCode, output.Result, error.Result);
    }
}
