using System.CommandLine;
using Vireo.Cli;

// VIREO_JIT_TRACE=1 lists every method the JIT compiles: start-up time is mostly JIT and type loading.
using var jitTrace = Environment.GetEnvironmentVariable("VIREO_JIT_TRACE") == "1" ? new JitTrace() : null;
var root = new RootCommand("Vireo: a KVM virtual machine monitor")
{
    RunCommand.Create(),
};
var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    // Bad options exit 2, as every other configuration error does.
    foreach (var error in parsed.Errors)
    {
        Console.Error.WriteLine($"vireo: {error.Message}");
    }
    return RunCommand.ExitBadConfig;
}
return parsed.Invoke();
