using System.CommandLine;
using System.CommandLine.Completions;
using System.Globalization;
using System.Text.Json;
using Spectre.Console;
using Vireo.Api;

namespace Vireo.Cli.Manage;

/// <summary>
/// The operator's commands, each one request or a few to vireod: create, list, info, start,
/// pause, resume, shutdown, reboot, destroy, undefine, rename, console, logs, edit, events, and
/// save, restore and snapshot (SaveCommands), and migrate (MigrateCommand).
/// Read commands take --json for scripts; every command exits with an <see cref="ExitCodes"/> status.
/// </summary>
internal static class ManageCommands
{
    public static readonly Option<string?> Connect = new("--connect")
    {
        Description = $"vireod's address: a Unix socket path (default {DaemonClient.DefaultSocket}, or $VIREO_CONNECT) or https://HOST:PORT",
        Recursive = true,
    };

    public static readonly Option<string?> TokenFile = new("--token-file")
    {
        Description = "A file holding your vireod user's token (or $VIREO_TOKEN_FILE): needed on TCP; on the Unix socket a uid an admin mapped is enough",
        Recursive = true,
    };

    public static readonly Option<string?> CaFile = new("--ca-file")
    {
        Description = "The PEM certificate (or its CA's) that vireod's TLS certificate must chain to, for https:// (or $VIREO_CA_FILE; else the host's trust store)",
        Recursive = true,
    };

    public static IEnumerable<Command> Create()
    {
        var json = new Option<bool>("--json") { Description = "Machine-readable output (the shape is documented in docs/cli.md)" };

        var file = new Argument<string>("file") { Description = "A VM definition in YAML or JSON ('-' for standard input)" };
        var noStart = new Option<bool>("--no-start") { Description = "Define the VM only (virsh define); by default it is started too (xl create)" };
        var tenant = new Option<string?>("--tenant") { Description = "The tenant the VM is for (admins only; by default the caller's own)" };
        var create = new Command("create", "Define a VM from a YAML or JSON file and start it") { file, noStart, tenant, json };
        create.SetAction(p => Run(p, client =>
        {
            string path = p.GetValue(file)!;
            string text = TextFile.Read(path);
            string route = p.GetValue(tenant) is { } t ? $"vms?tenant={Uri.EscapeDataString(t)}" : "vms";
            var vm = client.Send(HttpMethod.Post, route, DaemonJson.Default.VmSummary, text, "application/yaml");
            if (!p.GetValue(noStart))
            {
                vm = Slow($"starting {vm.Name}", () => client.Send(HttpMethod.Post, $"vms/{vm.Name}/start", DaemonJson.Default.VmSummary));
            }
            Report(p.GetValue(json), vm, $"{vm.Name}: defined (id {vm.Id}){(p.GetValue(noStart) ? "" : $", running as pid {vm.Pid}")}");
        }));
        yield return create;

        var list = new Command("list", "Every defined VM: Name, ID, Mem, VCPUs, State, Time (like xl list)") { json };
        list.SetAction(p => Run(p, client =>
        {
            var vms = client.Get("vms", DaemonJson.Default.VmListEntryArray);
            if (p.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(vms, DaemonJson.Default.VmListEntryArray));
                return;
            }
            var table = new Table { Border = TableBorder.None };
            table.AddColumn("Name").AddColumn(new TableColumn("ID").RightAligned()).AddColumn(new TableColumn("Mem").RightAligned())
                .AddColumn(new TableColumn("VCPUs").RightAligned()).AddColumn("State").AddColumn(new TableColumn("Time(s)").RightAligned());
            foreach (var vm in vms)
            {
                table.AddRow(Markup.Escape(vm.Name), vm.Id.ToString(CultureInfo.InvariantCulture), vm.MemoryMib.ToString(CultureInfo.InvariantCulture),
                    vm.Vcpus.ToString(CultureInfo.InvariantCulture), Markup.Escape(vm.State),
                    vm.UptimeSeconds?.ToString("0.0", CultureInfo.InvariantCulture) ?? "-");
            }
            AnsiConsole.Write(table);
        }));
        yield return list;

        var name = VmName();
        var info = new Command("info", "One VM: its state, process, last exit and definition") { name, json };
        info.SetAction(p => Run(p, client =>
        {
            var vm = client.Get($"vms/{Uri.EscapeDataString(p.GetValue(name)!)}", DaemonJson.Default.VmSummary);
            if (p.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(vm, DaemonJson.Default.VmSummary));
                return;
            }
            var grid = new Grid().AddColumn().AddColumn();
            void Row(string k, string? v) => grid.AddRow(new Text(k), new Text(v ?? "-"));
            Row("Name:", vm.Name);
            Row("ID:", vm.Id.ToString(CultureInfo.InvariantCulture));
            Row("State:", vm.State);
            Row("VCPUs:", vm.Vcpus.ToString(CultureInfo.InvariantCulture));
            Row("Memory:", $"{vm.MemoryMib} MiB");
            Row("VMM pid:", vm.Pid?.ToString(CultureInfo.InvariantCulture));
            Row("Uptime:", vm.UptimeSeconds is double u ? $"{u:0.0} s" : null);
            Row("Last exit:", vm.LastExit);
            Row("Kernel:", vm.Definition.Kernel);
            Row("Autostart:", vm.Definition.Autostart ? "yes" : "no");
            Row("On poweroff/reboot/crash:", $"{vm.Definition.OnPoweroff} / {vm.Definition.OnReboot} / {vm.Definition.OnCrash}");
            AnsiConsole.Write(grid);
        }));
        yield return info;

        foreach (var (verb, what) in new[]
        {
            ("start", "Start a defined VM"), ("pause", "Pause a VM's vCPUs"), ("resume", "Resume a paused VM"),
            ("reboot", "Reset a VM (the guest is not asked)"), ("destroy", "Stop a VM at once (no on_* policy applies)"),
        })
        {
            var vmName = VmName();
            var command = new Command(verb, what) { vmName, json };
            command.SetAction(p => Run(p, client =>
            {
                string n = p.GetValue(vmName)!;
                var vm = Slow($"{verb} {n}", () => client.Send(HttpMethod.Post, $"vms/{Uri.EscapeDataString(n)}/{verb}", DaemonJson.Default.VmSummary));
                Report(p.GetValue(json), vm, $"{vm.Name}: {vm.State}");
            }));
            yield return command;
        }

        var shutdownName = VmName();
        var timeout = WholeNumber("--timeout", "Seconds the guest gets to power off before it is destroyed (default 60)", 0, 86400);
        var noWait = new Option<bool>("--no-wait") { Description = "Return once the power button is pressed" };
        var shutdown = new Command("shutdown", "Press the ACPI power button; destroy the VM if it has not powered off within --timeout") { shutdownName, timeout, noWait };
        shutdown.SetAction(p => Run(p, client =>
        {
            string n = p.GetValue(shutdownName)!;
            int seconds = (int)(p.GetValue(timeout) ?? 60);
            client.Send(HttpMethod.Post, $"vms/{Uri.EscapeDataString(n)}/shutdown", DaemonJson.Default.VmSummary,
                JsonSerializer.Serialize(new ShutdownRequest(seconds), DaemonJson.Default.ShutdownRequest));
            if (p.GetValue(noWait))
            {
                Console.WriteLine($"{n}: power button pressed; destroyed after {seconds} s if still running");
                return;
            }
            // The daemon forces it off after the timeout: wait a little longer than that.
            var deadline = DateTime.UtcNow.AddSeconds(seconds + 15);
            var vm = Slow($"waiting for {n} to power off (at most {seconds} s)", () =>
            {
                while (true)
                {
                    var now = client.Get($"vms/{Uri.EscapeDataString(n)}", DaemonJson.Default.VmSummary);
                    if (now.State is DomainState.ShutOff or DomainState.Crashed || DateTime.UtcNow > deadline)
                    {
                        return now;
                    }
                    Thread.Sleep(100);
                }
            });
            if (vm.State is not (DomainState.ShutOff or DomainState.Crashed))
            {
                throw new CliException(ExitCodes.TimedOut, $"{n}: still {vm.State} after {seconds + 15} s");
            }
            Console.WriteLine($"{n}: {vm.State} ({vm.LastExit})");
        }));
        yield return shutdown;

        var undefineName = VmName();
        var undefine = new Command("undefine", "Forget a VM that is not running") { undefineName };
        undefine.SetAction(p => Run(p, client =>
        {
            client.Send(HttpMethod.Delete, $"vms/{Uri.EscapeDataString(p.GetValue(undefineName)!)}");
            Console.WriteLine($"{p.GetValue(undefineName)}: undefined");
        }));
        yield return undefine;

        var renameName = VmName();
        var newName = new Argument<string>("new-name") { Description = "The VM's new name" };
        var rename = new Command("rename", "Rename a VM that is not running") { renameName, newName };
        rename.SetAction(p => Run(p, client =>
        {
            var vm = client.Send(HttpMethod.Post, $"vms/{Uri.EscapeDataString(p.GetValue(renameName)!)}/rename", DaemonJson.Default.VmSummary,
                JsonSerializer.Serialize(new RenameRequest(p.GetValue(newName)!), DaemonJson.Default.RenameRequest));
            Console.WriteLine($"{p.GetValue(renameName)}: renamed to {vm.Name}");
        }));
        yield return rename;

        yield return ConsoleCommand.Create(VmName());
        yield return EditCommand.Create(VmName());
        yield return EventsCommand.Create(json);
        foreach (var command in SaveCommands.Create(json))
        {
            yield return command;
        }
        yield return MigrateCommand.Create(json);
        foreach (var command in AccessCommands.Create(json))
        {
            yield return command;
        }

        var logsName = VmName();
        var tail = WholeNumber("--tail-bytes", "At most this many bytes from the end (default 1 MiB, at most 16 MiB)", 0, 16 << 20);
        var logs = new Command("logs", "The console output a VM wrote, across its runs") { logsName, tail };
        logs.SetAction(p => Run(p, client =>
            Console.Out.Write(client.Send(HttpMethod.Get, $"vms/{Uri.EscapeDataString(p.GetValue(logsName)!)}/logs?tail_bytes={p.GetValue(tail) ?? 1 << 20}"))));
        yield return logs;
    }

    /// <summary>
    /// A whole-number option with its range, a bad value refused in words: System.CommandLine's own
    /// message names the .NET type ("as expected type 'System.Int32'").
    /// </summary>
    public static Option<long?> WholeNumber(string name, string description, long min, long max) => new(name)
    {
        Description = description,
        CustomParser = result =>
        {
            string text = result.Tokens.Count == 1 ? result.Tokens[0].Value : "";
            if (long.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long value)
                && value >= min && value <= max)
            {
                return value;
            }
            result.AddError($"{name}: '{text}' is not a whole number from {min} to {max}");
            return null;
        },
    };

    /// <summary>A VM name argument that completes from the daemon's list.</summary>
    public static Argument<string> VmName()
    {
        // HelpName: without it, help lists the completions (the daemon's VM names) as the argument's name.
        var name = new Argument<string>("name") { Description = "The VM's name", HelpName = "name" };
        name.CompletionSources.Add(context =>
        {
            try
            {
                using var client = new DaemonClient(context.ParseResult.GetValue(Connect), context.ParseResult.GetValue(TokenFile), context.ParseResult.GetValue(CaFile));
                return client.Get("vms", DaemonJson.Default.VmListEntryArray).Select(v => new CompletionItem(v.Name));
            }
            catch (CliException)
            {
                return [];
            }
        });
        return name;
    }

    /// <summary>Runs a command against the daemon; failures print one clear line (or a list of fields) and pick the exit status.</summary>
    public static int Run(ParseResult parse, Action<DaemonClient> body)
    {
        try
        {
            using var client = new DaemonClient(parse.GetValue(Connect), parse.GetValue(TokenFile), parse.GetValue(CaFile));
            body(client);
            return ExitCodes.Ok;
        }
        catch (CliException e)
        {
            Console.Error.WriteLine($"vireo: {e.Message}");
            return e.ExitCode;
        }
        catch (IOException e)
        {
            Console.Error.WriteLine($"vireo: {e.Message}");
            return ExitCodes.BadInput;
        }
    }

    /// <summary>A spinner on stderr while something slow runs, when stderr is a terminal; nothing otherwise.</summary>
    public static T Slow<T>(string what, Func<T> work)
    {
        if (Console.IsErrorRedirected)
        {
            return work();
        }
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        return console.Status().Spinner(Spinner.Known.Dots).Start(Markup.Escape(what) + "...", _ => work());
    }

    private static void Report(bool json, VmSummary vm, string line) =>
        Console.WriteLine(json ? JsonSerializer.Serialize(vm, DaemonJson.Default.VmSummary) : line);
}
