using System.CommandLine;
using System.CommandLine.Completions;
using System.Globalization;
using System.Text.Json;
using Spectre.Console;
using Vireo.Api;

namespace Vireo.Cli.Manage;

/// <summary>
/// `vireo save NAME FILE`, `vireo restore FILE` (xl's) and `vireo snapshot create|list|revert|delete`
/// (virsh's snapshot-*): a save is FILE, the VM's state, and FILE.mem beside it, its RAM; snapshots
/// live in vireod's state directory. Writing RAM shows a progress bar on a terminal.
/// </summary>
internal static class SaveCommands
{
    public static IEnumerable<Command> Create(Option<bool> json)
    {
        var saveName = ManageCommands.VmName();
        var saveFile = new Argument<string>("file") { Description = "Where the VM's state goes (its RAM goes beside it, in FILE.mem); neither may exist" };
        var save = new Command("save", "Pause a VM, save its state and RAM to FILE and FILE.mem, and stop it (xl save)") { saveName, saveFile, json };
        save.SetAction(p => ManageCommands.Run(p, client =>
        {
            string n = p.GetValue(saveName)!;
            string file = Path.GetFullPath(p.GetValue(saveFile)!);
            var vm = WithProgress(client, n, $"saving {n}", p.GetValue(json), () => client.Send(HttpMethod.Post, $"vms/{Uri.EscapeDataString(n)}/save",
                DaemonJson.Default.VmSummary, JsonSerializer.Serialize(new SaveRequest(file), DaemonJson.Default.SaveRequest)));
            Console.WriteLine(p.GetValue(json) ? JsonSerializer.Serialize(vm, DaemonJson.Default.VmSummary)
                : $"{vm.Name}: saved to {file} (RAM in {SaveRequest.MemoryFileOf(file)}); `vireo restore {file}` runs it again");
        }));
        yield return save;

        var restoreFile = new Argument<string>("file") { Description = "A file `vireo save` wrote (FILE.mem beside it)" };
        var restore = new Command("restore", "Run a saved VM again from its save file, under its name (xl restore)") { restoreFile, json };
        restore.SetAction(p => ManageCommands.Run(p, client =>
        {
            string file = Path.GetFullPath(p.GetValue(restoreFile)!);
            var vm = ManageCommands.Slow($"restoring from {file}", () => client.Send(HttpMethod.Post, "restore",
                DaemonJson.Default.VmSummary, JsonSerializer.Serialize(new SaveRequest(file), DaemonJson.Default.SaveRequest)));
            Console.WriteLine(p.GetValue(json) ? JsonSerializer.Serialize(vm, DaemonJson.Default.VmSummary)
                : $"{vm.Name}: restored from {file}, {vm.State} as pid {vm.Pid}");
        }));
        yield return restore;

        yield return Snapshot(json);
    }

    private static Command Snapshot(Option<bool> json)
    {
        var snapshot = new Command("snapshot", "A VM's snapshots, kept by vireod: create, list, revert, delete (disks are not part of them)");

        var createName = ManageCommands.VmName();
        var createSnap = new Argument<string?>("snapshot") { Description = "The snapshot's name (default: the UTC time, yyyyMMdd-HHmmss)", Arity = ArgumentArity.ZeroOrOne };
        var create = new Command("create", "Snapshot a running VM; it runs on (paused while its RAM is written)") { createName, createSnap, json };
        create.SetAction(p => ManageCommands.Run(p, client =>
        {
            string n = p.GetValue(createName)!;
            var info = WithProgress(client, n, $"snapshotting {n}", p.GetValue(json), () => client.Send(HttpMethod.Post, $"vms/{Uri.EscapeDataString(n)}/snapshots",
                DaemonJson.Default.SnapshotInfo, JsonSerializer.Serialize(new SnapshotRequest(p.GetValue(createSnap)), DaemonJson.Default.SnapshotRequest)));
            Console.WriteLine(p.GetValue(json) ? JsonSerializer.Serialize(info, DaemonJson.Default.SnapshotInfo)
                : $"{n}: snapshot '{info.Name}' created ({Size(info.SizeBytes)})");
        }));
        snapshot.Subcommands.Add(create);

        var listName = ManageCommands.VmName();
        var list = new Command("list", "A VM's snapshots: Name, Created (UTC), Size, Mem") { listName, json };
        list.SetAction(p => ManageCommands.Run(p, client =>
        {
            var snaps = client.Get($"vms/{Uri.EscapeDataString(p.GetValue(listName)!)}/snapshots", DaemonJson.Default.SnapshotInfoArray);
            if (p.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(snaps, DaemonJson.Default.SnapshotInfoArray));
                return;
            }
            var table = new Table { Border = TableBorder.None };
            table.AddColumn("Name").AddColumn("Created").AddColumn(new TableColumn("Size").RightAligned()).AddColumn(new TableColumn("Mem").RightAligned());
            foreach (var s in snaps)
            {
                table.AddRow(Markup.Escape(s.Name), s.CreatedAt.ToUniversalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture),
                    Size(s.SizeBytes), s.MemoryMib.ToString(CultureInfo.InvariantCulture));
            }
            AnsiConsole.Write(table);
        }));
        snapshot.Subcommands.Add(list);

        var revertName = ManageCommands.VmName();
        var revertSnap = SnapshotName(revertName);
        var revert = new Command("revert", "End the VM's VMM, if it runs, and run the snapshot in a fresh one (RAM and devices; disks stay as they are)") { revertName, revertSnap, json };
        revert.SetAction(p => ManageCommands.Run(p, client =>
        {
            string n = p.GetValue(revertName)!, s = p.GetValue(revertSnap)!;
            var vm = ManageCommands.Slow($"reverting {n} to {s}", () => client.Send(HttpMethod.Post,
                $"vms/{Uri.EscapeDataString(n)}/snapshots/{Uri.EscapeDataString(s)}/revert", DaemonJson.Default.VmSummary));
            Console.WriteLine(p.GetValue(json) ? JsonSerializer.Serialize(vm, DaemonJson.Default.VmSummary)
                : $"{vm.Name}: reverted to snapshot '{s}', {vm.State} as pid {vm.Pid}");
        }));
        snapshot.Subcommands.Add(revert);

        var deleteName = ManageCommands.VmName();
        var deleteSnap = SnapshotName(deleteName);
        var delete = new Command("delete", "Delete a snapshot and its files") { deleteName, deleteSnap };
        delete.SetAction(p => ManageCommands.Run(p, client =>
        {
            string n = p.GetValue(deleteName)!, s = p.GetValue(deleteSnap)!;
            client.Send(HttpMethod.Delete, $"vms/{Uri.EscapeDataString(n)}/snapshots/{Uri.EscapeDataString(s)}");
            Console.WriteLine($"{n}: snapshot '{s}' deleted");
        }));
        snapshot.Subcommands.Add(delete);
        return snapshot;
    }

    /// <summary>A snapshot name argument that completes from the VM's snapshots.</summary>
    private static Argument<string> SnapshotName(Argument<string> vmName)
    {
        var snap = new Argument<string>("snapshot") { Description = "The snapshot's name", HelpName = "snapshot" };
        snap.CompletionSources.Add(context =>
        {
            try
            {
                using var client = new DaemonClient(context.ParseResult.GetValue(ManageCommands.Connect), context.ParseResult.GetValue(ManageCommands.TokenFile), context.ParseResult.GetValue(ManageCommands.CaFile));
                return client.Get($"vms/{Uri.EscapeDataString(context.ParseResult.GetValue(vmName) ?? "")}/snapshots", DaemonJson.Default.SnapshotInfoArray)
                    .Select(s => new CompletionItem(s.Name));
            }
            catch (CliException)
            {
                return [];
            }
        });
        return snap;
    }

    private static string Size(long bytes) => bytes >= 1 << 20 ? $"{bytes / (double)(1 << 20):0.0} MiB" : $"{bytes / 1024.0:0.0} KiB";

    /// <summary>
    /// Runs a save or snapshot, and on a terminal (not with --json) shows the RAM written so far,
    /// polled from the daemon: bytes on disk of the memory file, of at most the guest's RAM (pages
    /// the guest never wrote are skipped, so the bar may jump to the end).
    /// </summary>
    private static T WithProgress<T>(DaemonClient client, string vm, string what, bool json, Func<T> work) =>
        ProgressBar.Run(client, vm, what, json, new DownloadedColumn(), (now, bar) =>
        {
            if (now.Operation is not null && now.BytesTotal > 0)
            {
                bar.MaxValue = now.BytesTotal;
                bar.Value = now.BytesWritten;
            }
        }, work);
}
