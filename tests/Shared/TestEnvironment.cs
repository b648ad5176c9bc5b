using System.Diagnostics;

namespace Vireo.Tests;

/// <summary>Where the repository is, and the guest kit built once for the whole test run.</summary>
internal static class TestEnvironment
{
    private static readonly Lazy<string> RootLazy = new(FindRoot);
    private static readonly Lazy<string> GuestsLazy = new(BuildGuests);
    private static readonly Lazy<string> ShippedLazy = new(BuildShipped);

    public static string Root => RootLazy.Value;

    /// <summary>guests/build, after `make -C guests` has run once in this process.</summary>
    public static string GuestDir => GuestsLazy.Value;

    public static string Guest(string name) => Path.Combine(GuestDir, name + ".elf");

    /// <summary>
    /// The native executable a user runs (vireo, vireo-vmm or vireod), as scripts/build publishes it
    /// into .build/vireo with Native AOT: every test that starts a Vireo process starts what ships.
    /// </summary>
    public static string Shipped(string program) => Path.Combine(ShippedLazy.Value, program);

    private static string BuildShipped()
    {
        // Nothing to do when the build is up to date; a lock in the script serialises test projects.
        var result = Run(Path.Combine(Root, "scripts", "build"), "", timeoutMs: 900_000);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException($"scripts/build failed:\n{result.Output}\n{result.Error}");
        }
        return Path.Combine(Root, ".build", "vireo");
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "guests", "Makefile")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("cannot find the repository root (guests/Makefile) above " + AppContext.BaseDirectory);
    }

    private static string BuildGuests()
    {
        var result = Run("make", $"-s -C {Path.Combine(Root, "guests")}");
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException($"building the guest kit failed:\n{result.Output}");
        }
        return Path.Combine(Root, "guests", "build");
    }

    public sealed record ProcessResult(int ExitCode, string Output, string Error);

    /// <summary>Runs a program to completion with a time limit, capturing stdout and stderr.</summary>
    public static ProcessResult Run(string file, string arguments, string? stdin = null, int timeoutMs = 120_000, string? workDir = null,
        (string Name, string Value)[]? env = null)
    {
        var psi = new ProcessStartInfo(file, arguments)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workDir ?? Root,
        };
        foreach (var (name, value) in env ?? [])
        {
            psi.Environment[name] = value;
        }
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (stdin is not null)
        {
            p.StandardInput.Write(stdin);
        }
        p.StandardInput.Close();
        if (!p.WaitForExit(timeoutMs))
        {
            p.Kill(entireProcessTree: true);
            // What it printed before it was stopped is usually the only clue to why it hung.
            Task.WaitAll([stdout, stderr], TimeSpan.FromSeconds(10));
            throw new TimeoutException($"{file} {arguments} did not finish in {timeoutMs} ms\n"
                + $"stdout:\n{Tail(stdout)}\nstderr:\n{Tail(stderr)}");
        }
        return new ProcessResult(p.ExitCode, stdout.Result, stderr.Result);
    }

    private static string Tail(Task<string> output) => output.IsCompletedSuccessfully ? Tail(output.Result) : "(still open)";

    /// <summary>The last <paramref name="chars"/> characters of a program's output, for a failure message.</summary>
    public static string Tail(string output, int chars = 8000) => output.Length <= chars ? output : "..." + output[^chars..];
}
