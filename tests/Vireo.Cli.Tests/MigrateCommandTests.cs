using System.Text.Json;
using Vireo.Api;
using Vireo.Daemon.Tests;
using Vireo.Tests;

namespace Vireo.Cli.Tests;

/// <summary>`vireo migrate NAME --to SOCKET` between two real vireod, with the kit's snapshot guest (its counter lives in RAM).</summary>
public class MigrateCommandTests
{
    private static TestEnvironment.ProcessResult Vireo(DaemonProcess d, string arguments) =>
        VireoProcess.Run(arguments, env: [("VIREO_CONNECT", d.Socket)]);

    private static string Log(DaemonProcess d, string name)
    {
        string file = Path.Combine(d.StateDir, "vms", name, "console.log");
        return File.Exists(file) ? File.ReadAllText(file) : "";
    }

    /// <summary>Types "c" through `vireo console` and returns the count the guest printed.</summary>
    private static int Count(DaemonProcess d, string name)
    {
        int before = Counts(d, name).Count;
        var r = VireoProcess.Run($"console {name}", stdin: "c\r", env: [("VIREO_CONNECT", d.Socket)]);
        Assert.True(r.ExitCode == 0, r.Error);
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (Counts(d, name).Count <= before)
        {
            Assert.True(DateTime.UtcNow < deadline, "timed out waiting for the count");
            Thread.Sleep(20);
        }
        return Counts(d, name)[^1];
    }

    private static List<int> Counts(DaemonProcess d, string name) =>
        [.. System.Text.RegularExpressions.Regex.Matches(Log(d, name), @"count=(\d+)").Select(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture))];

    [KvmFact]
    public void Migrate_moves_the_vm_with_a_progress_bar_and_back_with_json_and_refusals_say_why()
    {
        using var a = new DaemonProcess();
        using var b = new DaemonProcess();
        string file = Path.Combine(a.StateDir, "web.yaml");
        File.WriteAllText(file, $"name: web\nkernel: {TestEnvironment.Guest("snapshot")}\nmemory_mib: 32\n");
        Assert.Equal(0, Vireo(a, $"create {file}").ExitCode);
        var up = DateTime.UtcNow.AddSeconds(30);
        while (!Log(a, "web").Contains("snapshot: up"))
        {
            Assert.True(DateTime.UtcNow < up, "the guest to come up");
            Thread.Sleep(20);
        }
        Assert.Equal(1, Count(a, "web"));

        var r = Vireo(a, "migrate web");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("--to", r.Error);
        r = Vireo(a, $"migrate web --to {b.Socket} --downtime-ms 0");
        Assert.Equal((2, true), (r.ExitCode, r.Error.Contains("--downtime-ms: '0' is not a whole number from 1")));
        r = Vireo(a, $"migrate ghost --to {b.Socket}");
        Assert.Equal((3, "vireo: no VM named 'ghost'"), (r.ExitCode, r.Error.Trim()));
        string nowhere = Path.Combine(TempDirectory.Create("vireo-cli-mig"), "nowhere.sock");
        r = Vireo(a, $"migrate web --to {nowhere}");
        Assert.Equal((2, $"vireo: destination: no socket at {nowhere} (is the other vireod running? its --socket names it)"), (r.ExitCode, r.Error.Trim()));
        Assert.Equal("running", JsonSerializer.Deserialize(Vireo(a, "info web --json").Output, DaemonJson.Default.VmSummary)!.State);

        // On a terminal: a progress bar on stderr, then the total time and the downtime.
        r = TestEnvironment.Run("script", $"-qefc \"{VireoProcess.Program} migrate web --to unix:{b.Socket}\" /dev/null", env: [("VIREO_CONNECT", a.Socket)]);
        Assert.True(r.ExitCode == 0, r.Output + r.Error);
        Assert.Contains("migrating web", r.Output);
        Assert.Contains("100%", r.Output);
        Assert.Matches(@"web: migrated to " + System.Text.RegularExpressions.Regex.Escape(b.Socket) + @" in \d+\.\d\d s \((downtime [\d.]+ ms|downtime not reported), [\d.]+ MiB sent in \d+ rounds?\); running there as pid \d+", r.Output);
        Assert.Equal("[]", Vireo(a, "list --json").Output.Trim());
        Assert.Equal(2, Count(b, "web"));

        // Back, with --json: no bar, the result's every key.
        r = Vireo(b, $"migrate web --to unix:{a.Socket} --downtime-ms 500 --timeout 60 --force --json");
        Assert.True(r.ExitCode == 0, r.Error);
        Assert.DoesNotContain("%", r.Error);
        using (var doc = JsonDocument.Parse(r.Output))
        {
            Assert.Equal(["name", "destination", "state", "pid", "elapsed_ms", "downtime_ms", "bytes_sent", "rounds"], doc.RootElement.EnumerateObject().Select(p => p.Name));
        }
        var result = JsonSerializer.Deserialize(r.Output, DaemonJson.Default.MigrationResult)!;
        Assert.Equal(("web", a.Socket, "running"), (result.Name, result.Destination, result.State));
        Assert.Equal(3, Count(a, "web"));
        Assert.Equal("[]", Vireo(b, "list --json").Output.Trim());
    }
}
