using System.CommandLine;
using Vireo.Cli;

var root = new RootCommand("Vireo: a KVM virtual machine monitor")
{
    RunCommand.Create(),
};
return root.Parse(args).Invoke();
