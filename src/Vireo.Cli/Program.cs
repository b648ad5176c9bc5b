using System.CommandLine;
using Vireo.Cli;
using Vireo.Cli.Import;
using Vireo.Cli.Manage;

// `vireo --jail uid=..,gid=.. run ...`: started by `vireo run --sandbox` inside its jail, as root there;
// that privilege is spent before anything else (SandboxedRun).
if (args.Length >= 2 && args[0] == "--jail")
{
    var jail = Vireo.Sandbox.JailOption.Parse(args[1], out string? wrong);
    if (jail is null)
    {
        Console.Error.WriteLine($"vireo: --jail: {wrong}");
        return 2;
    }
    try
    {
        jail.Enter();
    }
    catch (Vireo.Sandbox.SandboxException e)
    {
        Console.Error.WriteLine($"vireo: the jail could not be entered: {e.Message}");
        return 1;
    }
    args = args[2..];
}
var root = new RootCommand("Vireo: a KVM virtual machine monitor. `vireo run` boots one VM here; the other commands manage VMs through vireod.")
{
    RunCommand.Create(),
};
// The management commands are only built when asked for: `vireo run` is on every boot's critical path.
if (args.Length == 0 || args[0] != "run")
{
    root.Options.Add(ManageCommands.Connect);
    root.Options.Add(ManageCommands.TokenFile);
    root.Options.Add(ManageCommands.CaFile);
    foreach (var command in ManageCommands.Create())
    {
        root.Subcommands.Add(command);
    }
    root.Subcommands.Add(ImportCommand.Create());
    root.Subcommands.Add(CompletionCommand.Create());
}
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
