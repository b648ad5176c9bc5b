using System.CommandLine;
using Vireo.Cli;
using Vireo.Cli.Import;
using Vireo.Cli.Manage;

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
