using Vireo.Tests;

namespace Vireo.Cli.Tests;

/// <summary>Runs the real `vireo` program (the native executable scripts/build ships) as a user would.</summary>
internal static class VireoProcess
{
    public static string Program => TestEnvironment.Shipped("vireo");

    public static TestEnvironment.ProcessResult Run(string arguments, string? stdin = null, int timeoutMs = 120_000, (string, string)[]? env = null)
    {
        _ = TestEnvironment.GuestDir; // the guest kit is built before any run
        // VIREO_TEST_SANDBOX=1: every `vireo run` of the suite in its jail (what cannot be jailed, vsock and unix nets, stays out).
        if (Environment.GetEnvironmentVariable("VIREO_TEST_SANDBOX") == "1" && arguments.StartsWith("run ", StringComparison.Ordinal)
            && !arguments.Contains("--vsock", StringComparison.Ordinal) && !arguments.Contains("unix=", StringComparison.Ordinal) && !arguments.Contains("--sandbox", StringComparison.Ordinal))
        {
            arguments = "run --sandbox " + arguments[4..];
        }
        return TestEnvironment.Run(Program, arguments, stdin, timeoutMs, env: env);
    }
}
