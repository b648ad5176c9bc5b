using System.CommandLine;
using System.Diagnostics;
using Vireo.Api;
using Vireo.Api.Definitions;

namespace Vireo.Cli.Manage;

/// <summary>
/// `vireo edit NAME`: the definition as YAML in $VISUAL or $EDITOR (else vi); saved back if it
/// changed and fits the schema. A refused edit is reported field by field and the file kept, so
/// nothing typed is lost. Like virsh edit, a running VM picks the change up at its next start.
/// </summary>
internal static class EditCommand
{
    public static Command Create(Argument<string> name)
    {
        var command = new Command("edit", "Edit a VM's definition in $EDITOR") { name };
        command.SetAction(p => ManageCommands.Run(p, client =>
        {
            string n = p.GetValue(name)!;
            var vm = client.Get($"vms/{Uri.EscapeDataString(n)}", DaemonJson.Default.VmSummary);
            string original = DefinitionReader.ToYaml(vm.Definition, $"VM '{n}': saved back when the editor exits; the schema is GET /schemas/vm-definition");
            string file = Path.Combine(Path.GetTempPath(), $"vireo-edit-{n}-{Environment.ProcessId}.yaml");
            File.WriteAllText(file, original);
            string editor = Environment.GetEnvironmentVariable("VISUAL") ?? Environment.GetEnvironmentVariable("EDITOR") ?? "vi";
            using (var process = Process.Start(new ProcessStartInfo("/bin/sh") { ArgumentList = { "-c", $"{editor} \"$0\"", file }, UseShellExecute = false })!)
            {
                process.WaitForExit();
                if (process.ExitCode != 0)
                {
                    throw new CliException(ExitCodes.Refused, $"the editor ({editor}) exited with status {process.ExitCode}; nothing changed, your text is in {file}");
                }
            }
            string edited = TextFile.Read(file);
            if (edited == original)
            {
                File.Delete(file);
                Console.WriteLine($"{n}: no changes");
                return;
            }
            try
            {
                client.Send(HttpMethod.Put, $"vms/{Uri.EscapeDataString(n)}", edited, "application/yaml");
            }
            catch (CliException e)
            {
                throw new CliException(e.ExitCode, $"{e.Message}\nnothing changed; your edit is kept in {file}");
            }
            File.Delete(file);
            Console.WriteLine($"{n}: definition updated{(vm.State == DomainState.ShutOff ? "" : " (takes effect at the next start)")}");
        }));
        return command;
    }
}
