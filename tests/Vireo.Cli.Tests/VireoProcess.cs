using Vireo.Tests;

namespace Vireo.Cli.Tests;

/// <summary>Runs the real `vireo` program (the built vireo.dll beside the tests) as a user would.</summary>
internal static class VireoProcess
{
    private static string Dll => Path.Combine(AppContext.BaseDirectory, "vireo.dll");

    public static TestEnvironment.ProcessResult Run(string arguments, string? stdin = null, int timeoutMs = 120_000, (string, string)[]? env = null)
    {
        _ = TestEnvironment.GuestDir; // the guest kit is built before any run
        return TestEnvironment.Run("dotnet", $"{Dll} {arguments}", stdin, timeoutMs, env: env);
    }
}
