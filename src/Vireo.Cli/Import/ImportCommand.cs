using System.CommandLine;
using Vireo.Api;
using Vireo.Api.Definitions;
using Vireo.Cli.Manage;

namespace Vireo.Cli.Import;

/// <summary>`vireo import xl FILE.cfg`: an xl domain configuration as a Vireo definition (YAML), with a note per key it cannot honour.</summary>
internal static class ImportCommand
{
    public static Command Create()
    {
        var file = new Argument<string>("file") { Description = "An xl.cfg domain configuration" };
        var output = new Option<string?>("--output", "-o") { Description = "Write the YAML definition here (default: standard output)" };
        var define = new Option<bool>("--define") { Description = "Also define the VM in vireod" };
        var strict = new Option<bool>("--strict") { Description = "Fail (exit 2) if any key cannot be honoured" };
        var xl = new Command("xl", "Convert an xl.cfg file; every key that cannot be honoured is reported on stderr") { file, output, define, strict };
        xl.SetAction(p =>
        {
            string path = p.GetValue(file)!;
            string text;
            try
            {
                text = TextFile.Read(path);
            }
            catch (CliException e)
            {
                Console.Error.WriteLine($"vireo import: {e.Message}");
                return e.ExitCode;
            }
            var result = XlImport.Convert(text, Path.GetDirectoryName(Path.GetFullPath(path))!);
            foreach (var note in result.Notes)
            {
                Console.Error.WriteLine($"vireo import: {path}: {note}");
            }
            if (result.Definition is null)
            {
                Console.Error.WriteLine($"vireo import: {path}: {result.Error}");
                return ExitCodes.BadInput;
            }
            string yaml = DefinitionReader.ToYaml(result.Definition,
                $"Imported from {Path.GetFileName(path)} by `vireo import xl`." + (result.Notes.Count == 0 ? "" : "\nNot honoured:\n" + string.Join("\n", result.Notes.Select(n => $"  {n}"))));
            // The result must itself be a valid definition: a conversion bug is caught here, not in vireod.
            var check = DefinitionReader.Parse(yaml);
            if (check.Definition is null)
            {
                Console.Error.WriteLine($"vireo import: {path}: the converted definition is invalid: {check.ErrorText}");
                return ExitCodes.BadInput;
            }
            if (p.GetValue(output) is { } outFile)
            {
                File.WriteAllText(outFile, yaml);
            }
            else
            {
                Console.Out.Write(yaml);
            }
            if (p.GetValue(strict) && result.Notes.Count > 0)
            {
                return ExitCodes.BadInput;
            }
            return p.GetValue(define)
                ? ManageCommands.Run(p, client => Console.Error.WriteLine(
                    $"vireo import: defined '{client.Send(HttpMethod.Post, "vms", DaemonJson.Default.VmSummary, yaml, "application/yaml").Name}'"))
                : ExitCodes.Ok;
        });
        return new Command("import", "Turn another tool's VM configuration into a Vireo definition") { xl };
    }
}
