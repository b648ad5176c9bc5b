using Vireo.Tests;

namespace Vireo.Cli.Tests;

/// <summary>Runs the real `vireo` program (the native executable scripts/build ships) as a user would.</summary>
internal static class VireoProcess
{
    public static string Program => TestEnvironment.Shipped("vireo");

    public static TestEnvironment.ProcessResult Run(string arguments, string? stdin = null, int timeoutMs = 120_000, (string, string)[]? env = null)
    {
        _ = TestEnvironment.GuestDir; // the guest kit is built before any run
        return TestEnvironment.Run(Program, arguments, stdin, timeoutMs, env: env);
    }
}
