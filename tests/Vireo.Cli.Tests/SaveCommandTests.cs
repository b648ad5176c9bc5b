using System.Text.Json;
using Vireo.Api;
using Vireo.Daemon.Tests;
using Vireo.Tests;

namespace Vireo.Cli.Tests;

/// <summary>`vireo save`, `restore` and `snapshot ...` against a real vireod, with the kit's snapshot guest (its counter lives in RAM).</summary>
public class SaveCommandTests
{
    private static TestEnvironment.ProcessResult Vireo(DaemonProcess d, string arguments) =>
        VireoProcess.Run(arguments, env: [("VIREO_CONNECT", d.Socket)]);

    private static void Create(DaemonProcess d, string name)
    {
        string file = Path.Combine(d.StateDir, $"{name}.yaml");
        File.WriteAllText(file, $"name: {name}\nkernel: {TestEnvironment.Guest("snapshot")}\nmemory_mib: 32\n");
        var r = Vireo(d, $"create {file}");
        Assert.True(r.ExitCode == 0, r.Error);
        Until(() => Log(d, name).Contains("snapshot: up"), "the guest to come up");
    }

    private static string Log(DaemonProcess d, string name) => File.ReadAllText(Path.Combine(d.StateDir, "vms", name, "console.log"));

    /// <summary>Types "c" through `vireo console` and returns the count the guest printed.</summary>
    private static int Count(DaemonProcess d, string name)
    {
        int before = Counts(d, name).Count;
        var r = VireoProcess.Run($"console {name}", stdin: "c\r", env: [("VIREO_CONNECT", d.Socket)]);
        Assert.True(r.ExitCode == 0, r.Error);
        Until(() => Counts(d, name).Count > before, "the count");
        return Counts(d, name)[^1];
    }

    private static List<int> Counts(DaemonProcess d, string name) =>
        [.. System.Text.RegularExpressions.Regex.Matches(Log(d, name), @"count=(\d+)").Select(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture))];

    private static void Until(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}");
            Thread.Sleep(20);
        }
    }

    [KvmFact]
    public void Save_list_restore_and_their_refusals()
    {
        using var d = new DaemonProcess();
        Create(d, "web");
        Assert.Equal(1, Count(d, "web"));
        string dir = TempDirectory.Create("vireo-cli-save");
        string file = Path.Combine(dir, "web.save");

        var saved = TestEnvironment.Run(VireoProcess.Program, "save web web.save", env: [("VIREO_CONNECT", d.Socket)], workDir: dir);
        Assert.True(saved.ExitCode == 0, saved.Error);
        Assert.Contains($"web: saved to {file}", saved.Output); // a relative FILE is the caller's, made absolute
        Assert.DoesNotContain("%", saved.Error); // no progress bar when stderr is not a terminal
        var row = Vireo(d, "list").Output.Split('\n', StringSplitOptions.RemoveEmptyEntries)[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(["web", "1", "32", "1", "saved"], row[..5]);
        var listed = JsonSerializer.Deserialize(Vireo(d, "list --json").Output, DaemonJson.Default.VmListEntryArray)!.Single();
        Assert.Equal((DomainState.Saved, file), (listed.State, listed.SavedTo));

        var again = Vireo(d, $"save web {file}-2");
        Assert.Equal((1, "vireo: 'web' is saved: only a running or paused VM can be saved"), (again.ExitCode, again.Error.Trim()));
        var bogus = Path.Combine(dir, "bogus");
        File.WriteAllText(bogus, "not a save");
        var notSave = Vireo(d, $"restore {bogus}");
        Assert.Equal(2, notSave.ExitCode);
        Assert.Contains("is not a save this vireod made", notSave.Error);
        Assert.Equal(3, Vireo(d, $"save nobody {file}-3").ExitCode);

        var restored = Vireo(d, $"restore {file} --json");
        Assert.True(restored.ExitCode == 0, restored.Error);
        var vm = JsonSerializer.Deserialize(restored.Output, DaemonJson.Default.VmSummary)!;
        Assert.Equal(("web", DomainState.Running), (vm.Name, vm.State));
        Assert.Equal(2, Count(d, "web"));
        var running = Vireo(d, $"restore {file}");
        Assert.Equal(1, running.ExitCode);
        Assert.Contains("'web' is running", running.Error);

        // On a terminal, the RAM written shows as a progress bar (on stderr), and ends full.
        var tty = TestEnvironment.Run("script", $"-qec \"{VireoProcess.Program} save web {file}-tty\" /dev/null",
            env: [("VIREO_CONNECT", d.Socket), ("TERM", "xterm")]);
        Assert.True(tty.ExitCode == 0, tty.Output + tty.Error);
        Assert.Contains("saving web", tty.Output);
        Assert.Contains("100%", tty.Output);
        Assert.True(File.Exists($"{file}-tty.mem"));
    }

    [KvmFact]
    public void Snapshot_create_list_revert_delete_and_bad_names()
    {
        using var d = new DaemonProcess();
        Create(d, "db");
        Assert.Equal(1, Count(d, "db"));
        var created = Vireo(d, "snapshot create db before");
        Assert.True(created.ExitCode == 0, created.Error);
        Assert.Contains("db: snapshot 'before' created", created.Output);
        Assert.Equal(2, Count(d, "db")); // still running
        var unnamed = Vireo(d, "snapshot create db --json");
        Assert.True(unnamed.ExitCode == 0, unnamed.Error);
        Assert.Matches(@"^\d{8}-\d{6}$", JsonSerializer.Deserialize(unnamed.Output, DaemonJson.Default.SnapshotInfo)!.Name);

        using (var doc = JsonDocument.Parse(Vireo(d, "snapshot list db --json").Output))
        {
            Assert.Equal(2, doc.RootElement.GetArrayLength());
            Assert.Equal(["name", "created_at", "size_bytes", "memory_mib"], doc.RootElement[0].EnumerateObject().Select(p => p.Name));
            Assert.Equal("before", doc.RootElement[0].GetProperty("name").GetString());
        }
        var table = Vireo(d, "snapshot list db").Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(["Name", "Created", "Size", "Mem"], table[0].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("before ", table[1].Trim(), StringComparison.Ordinal);

        var reverted = Vireo(d, "snapshot revert db before");
        Assert.True(reverted.ExitCode == 0, reverted.Error);
        Assert.Contains("db: reverted to snapshot 'before', running", reverted.Output);
        Assert.Equal(2, Count(d, "db")); // from 1 again

        foreach (var (args, status, words) in new[]
        {
            ("snapshot create db a/b", 2, "vireo: name: 'a/b' is not a snapshot name"),
            ("snapshot create db before", 1, "vireo: name: 'db' already has a snapshot named 'before'"),
            ("snapshot revert db missing", 3, "vireo: snapshot: 'db' has no snapshot named 'missing'"),
            ("snapshot revert db -x", 2, ""),
            ("snapshot delete db ../../x", 2, "is not a snapshot name"),
            ("snapshot list nobody", 3, "vireo: no VM named 'nobody'"),
            ("snapshot create nobody", 3, "vireo: no VM named 'nobody'"),
        })
        {
            var r = Vireo(d, args);
            Assert.True(r.ExitCode == status && r.Error.Contains(words, StringComparison.Ordinal), $"{args}: {r.ExitCode} {r.Error}");
        }
        Assert.Equal(3, Count(d, "db")); // none of that touched the VM

        Assert.Equal(0, Vireo(d, "snapshot delete db before").ExitCode);
        Assert.DoesNotContain("before", Vireo(d, "snapshot list db").Output);
        Assert.Equal(0, Vireo(d, "destroy db").ExitCode);
    }
}
