using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Spectre.Console;
using Vireo.Api;

namespace Vireo.Cli.Manage;

/// <summary>
/// `vireo migrate NAME --to URI` (xl migrate): moves a running VM, live, to another vireod on this
/// host, named by its API socket. Once it runs there it is undefined here; if it cannot be moved it
/// runs on here and the reason is printed. On a terminal (not with --json) a progress bar follows it.
/// </summary>
internal static class MigrateCommand
{
    public static Command Create(Option<bool> json)
    {
        var name = ManageCommands.VmName();
        var to = new Option<string>("--to")
        {
            Description = "The destination vireod's API socket: unix:PATH, or PATH (its --socket)",
            Required = true,
        };
        var downtime = ManageCommands.WholeNumber("--downtime-ms", "The pause the guest can bear at the end, in ms (default 300)", 1, 3_600_000);
        var timeout = ManageCommands.WholeNumber("--timeout", "Seconds the copy may take before it gives up (default 3600)", 1, 86_400 * 7);
        var force = new Option<bool>("--force")
        {
            Description = "At the timeout, stop the VM and copy what is left, however long the pause (by default the migration is cancelled and the VM runs on here)",
        };
        var command = new Command("migrate", "Move a running VM, live, to another vireod on this host; it is undefined here once it runs there (xl migrate)")
        {
            name, to, downtime, timeout, force, json,
        };
        command.SetAction(p => ManageCommands.Run(p, client =>
        {
            string n = p.GetValue(name)!;
            string destination = p.GetValue(to)!;
            if (!destination.StartsWith("unix:", StringComparison.Ordinal) && !destination.Contains(':', StringComparison.Ordinal))
            {
                destination = Path.GetFullPath(destination); // a bare socket path, relative to here
            }
            else if (destination.StartsWith("unix:", StringComparison.Ordinal) && destination.Length > 5)
            {
                destination = "unix:" + Path.GetFullPath(destination[5..]);
            }
            var request = new MigrateRequest(destination, p.GetValue(downtime) ?? 300, p.GetValue(timeout) ?? 3600,
                p.GetValue(force) ? MigrationSendParams.Force : MigrationSendParams.Cancel);
            var result = WithProgress(client, n, p.GetValue(json), () => client.Send(HttpMethod.Post, $"vms/{Uri.EscapeDataString(n)}/migrate",
                DaemonJson.Default.MigrationResult, JsonSerializer.Serialize(request, DaemonJson.Default.MigrateRequest)));
            bool runs = result.State is DomainState.Running or DomainState.Paused;
            if (p.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(result, DaemonJson.Default.MigrationResult));
            }
            if (!runs)
            {
                // Its VMM here sent it and ended: there is nothing to run on here. Say so, and fail.
                throw new CliException(ExitCodes.Refused, $"'{result.Name}' was sent to {result.Destination} and has ended here, but the destination reports it {result.State}, not running: see `vireo events` there");
            }
            if (p.GetValue(json))
            {
                return;
            }
            string down = result.DowntimeMs is { } d ? $"downtime {d.ToString("0.#", CultureInfo.InvariantCulture)} ms" : "downtime not reported";
            string sent = $"{(result.BytesSent / (double)(1 << 20)).ToString("0.0", CultureInfo.InvariantCulture)} MiB sent in {result.Rounds} round{(result.Rounds == 1 ? "" : "s")}";
            string there = result.Pid is { } pid ? $"{result.State} there as pid {pid}" : $"{result.State} there";
            Console.WriteLine($"{result.Name}: migrated to {result.Destination} in {(result.ElapsedMs / 1000).ToString("0.00", CultureInfo.InvariantCulture)} s ({down}, {sent}); {there}");
        }));
        return command;
    }

    /// <summary>
    /// The migration, and on a terminal (not with --json) a bar of the guest's RAM sent in the
    /// current round, polled from the daemon, with the round and the rate.
    /// </summary>
    private static T WithProgress<T>(DaemonClient client, string vm, bool json, Func<T> work) =>
        ProgressBar.Run(client, vm, $"migrating {vm}", json, new ElapsedTimeColumn(), (now, bar) =>
        {
            if (now.Migration is { PagesTotal: > 0 } m)
            {
                bar.MaxValue = m.PagesTotal;
                bar.Value = m.PagesTotal - m.PagesLeft;
                string rate = m.RateMibS.ToString("0", CultureInfo.InvariantCulture);
                bar.Description = Markup.Escape(m.State == "StopAndCopy" ? $"migrating {vm}: stop and copy"
                    : $"migrating {vm}: round {Math.Max(1, m.Round)}, {rate} MiB/s");
            }
        }, work, done: $"migrating {vm}: done");
}
