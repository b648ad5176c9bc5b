using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Vireo.Api;
using Vireo.Tests;

namespace Vireo.Daemon.Tests;

/// <summary>
/// Save and restore, snapshots and their revert, through a real vireod and real VMMs, with the kit's
/// snapshot guest, whose counter lives in RAM: "c" on its console prints count=N, one more each time.
/// Each VM has a disk too, so a restore must hand the fresh VMM the same file on the fd number its
/// snapshot names.
/// </summary>
public class SaveTests
{
    private static readonly HttpMethod Post = HttpMethod.Post, Delete = HttpMethod.Delete;

    /// <summary>A daemon with one more image directory holding a disk, and a snapshot-guest VM on it, started.</summary>
    internal sealed class Rig : IDisposable
    {
        public DaemonProcess D { get; }
        public string Images { get; } = TempDirectory.Create("vireo-save-images");
        public string Saves { get; } = TempDirectory.Create("vireo-saves");

        public Rig(string extraArgs = "")
        {
            File.WriteAllBytes(Path.Combine(Images, "disk.img"), new byte[1 << 20]);
            D = new DaemonProcess(extraArgs: $"--image-dir {Images} {extraArgs}");
        }

        public async Task Start(string name)
        {
            await D.Ok(Post, "vms", DaemonProcess.Definition(name, guest: "snapshot",
                extra: $$""", "disks": [{"path": "{{Path.Combine(Images, "disk.img")}}"}]"""));
            await D.Ok(Post, $"vms/{name}/start");
            await Eventually.Until(() => Task.FromResult(Console(name).Contains("snapshot: up")), "the guest to come up");
        }

        public string Console(string name) => File.ReadAllText(Path.Combine(D.StateDir, "vms", name, "console.log"));

        /// <summary>Types "c" and waits for the count it prints, which must be <paramref name="expected"/>.</summary>
        public async Task Count(string name, int expected)
        {
            int before = Counts(name).Count;
            using var content = new ByteArrayContent("c\r"u8.ToArray());
            using var r = await D.Http.PutAsync($"vms/{name}/console/input", content);
            Assert.True(r.IsSuccessStatusCode, await r.Content.ReadAsStringAsync());
            await Eventually.Until(() => Task.FromResult(Counts(name).Count > before), $"count={expected}");
            Assert.Equal(expected, Counts(name)[^1]);
        }

        public List<int> Counts(string name) =>
            [.. System.Text.RegularExpressions.Regex.Matches(Console(name), @"count=(\d+)").Select(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture))];

        public static string Body(string file) => JsonSerializer.Serialize(new SaveRequest(file), DaemonJson.Default.SaveRequest);

        public void Dispose() => D.Dispose();
    }

    private static string Fault(string body) => JsonSerializer.Deserialize(body, DaemonJson.Default.ApiError)!.FaultMessage;

    [KvmFact]
    public async Task Save_stops_the_vm_as_saved_and_restore_runs_it_on_from_the_same_count()
    {
        using var rig = new Rig();
        var d = rig.D;
        await rig.Start("keeper");
        await rig.Count("keeper", 1);
        await rig.Count("keeper", 2);
        int pid = (await d.Get("keeper")).Pid!.Value;
        string file = Path.Combine(rig.Saves, "keeper.save");

        var saved = await d.Ok(Post, "vms/keeper/save", Rig.Body(file));
        Assert.Equal((DomainState.Saved, null, file), (saved.State, saved.Pid, saved.SavedTo));
        Assert.True(File.Exists(file) && File.Exists(file + ".mem"));
        Assert.False(Directory.Exists($"/proc/{pid}") && File.ReadAllText($"/proc/{pid}/cmdline").Contains("vireo-vmm")); // its VMM ended
        var listed = (await d.List()).Single();
        Assert.Equal((DomainState.Saved, file), (listed.State, listed.SavedTo));
        using (var doc = JsonDocument.Parse(await d.Http.GetStringAsync("vms")))
        {
            Assert.Equal(["name", "id", "state", "vcpus", "memory_mib", "uptime_seconds", "pid", "saved_to", "tenant"], doc.RootElement[0].EnumerateObject().Select(p => p.Name));
        }
        Assert.Contains("saved to", (await d.Get("keeper")).LastExit);

        // The state survives a daemon restart, and a restore takes the saved VM back from there.
        d.KillAndRestart();
        Assert.Equal(DomainState.Saved, (await d.Get("keeper")).State);
        var restored = await d.Ok(Post, "restore", Rig.Body(file));
        Assert.Equal(("keeper", DomainState.Running, null), (restored.Name, restored.State, restored.SavedTo));
        Assert.NotEqual(pid, restored.Pid);
        // The restored VMM has written nothing yet: its console still answers at once, so a client
        // that types only once attached (vireo console) is not left waiting for output that never comes.
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10)))
        using (var console = await d.Http.GetAsync("vms/keeper/console", HttpCompletionOption.ResponseHeadersRead, cts.Token))
        {
            Assert.Equal(System.Net.HttpStatusCode.OK, console.StatusCode);
            await using var stream = await console.Content.ReadAsStreamAsync(cts.Token);
            await rig.Count("keeper", 3); // RAM came back: the counter goes on from 2
            var seen = new StringBuilder();
            var buffer = new byte[4096];
            while (!seen.ToString().Contains("count=3"))
            {
                int n = await stream.ReadAsync(buffer, cts.Token);
                Assert.True(n > 0, $"the console ended after: {seen}");
                seen.Append(Encoding.ASCII.GetString(buffer, 0, n));
            }
        }
        Assert.True(File.Exists(file) && File.Exists(file + ".mem")); // a restore keeps the save

        var (status, body) = await d.Send(Post, "restore", Rig.Body(file));
        Assert.Equal((409, true), (status, Fault(body).Contains("'keeper' is running")));
        await rig.Count("keeper", 4); // the refused restore did not touch the running VM
        await d.Ok(Post, "vms/keeper/destroy");
    }

    [KvmFact]
    public async Task A_snapshot_keeps_the_vm_running_and_revert_goes_back_to_its_count()
    {
        using var rig = new Rig();
        var d = rig.D;
        await rig.Start("timeline");
        await rig.Count("timeline", 1);
        var (status, body) = await d.Send(Post, "vms/timeline/snapshots", """{"name": "first"}""");
        Assert.True(status == 201, body);
        var first = JsonSerializer.Deserialize(body, DaemonJson.Default.SnapshotInfo)!;
        Assert.Equal(("first", 32L), (first.Name, first.MemoryMib));
        Assert.True(first.SizeBytes > 0);
        Assert.Equal(DomainState.Running, (await d.Get("timeline")).State);
        int pid = (await d.Get("timeline")).Pid!.Value;
        await rig.Count("timeline", 2); // it runs on
        await rig.Count("timeline", 3);

        // No name: a UTC timestamp. The same name again is refused.
        (status, body) = await d.Send(Post, "vms/timeline/snapshots");
        Assert.True(status == 201, body);
        Assert.Matches(@"^\d{8}-\d{6}$", JsonSerializer.Deserialize(body, DaemonJson.Default.SnapshotInfo)!.Name);
        (status, body) = await d.Send(Post, "vms/timeline/snapshots", """{"name": "first"}""");
        Assert.Equal((409, true), (status, Fault(body).Contains("already has a snapshot named 'first'")));

        var list = (await d.Http.GetFromJsonAsync("vms/timeline/snapshots", DaemonJson.Default.SnapshotInfoArray))!;
        Assert.Equal(2, list.Length);
        Assert.Equal("first", list[0].Name);
        Assert.True(list[0].CreatedAt <= list[1].CreatedAt);

        var reverted = await d.Ok(Post, "vms/timeline/snapshots/first/revert");
        Assert.Equal(DomainState.Running, reverted.State);
        Assert.NotEqual(pid, reverted.Pid); // a fresh VMM
        await rig.Count("timeline", 2); // back to the count at the snapshot, 1, and on from there

        // Revert also runs a VM that is not running.
        await d.Ok(Post, "vms/timeline/destroy");
        Assert.Equal(DomainState.Running, (await d.Ok(Post, "vms/timeline/snapshots/first/revert")).State);
        await rig.Count("timeline", 2);

        (status, _) = await d.Send(Delete, "vms/timeline/snapshots/first");
        Assert.Equal(204, status);
        Assert.False(File.Exists(Path.Combine(d.StateDir, "vms", "timeline", "snapshots", "first.mem")));
        Assert.Single((await d.Http.GetFromJsonAsync("vms/timeline/snapshots", DaemonJson.Default.SnapshotInfoArray))!);
        (status, body) = await d.Send(Post, "vms/timeline/snapshots/first/revert");
        Assert.Equal((404, "snapshot: 'timeline' has no snapshot named 'first'"), (status, Fault(body)));
        await d.Ok(Post, "vms/timeline/destroy");
    }

    [KvmFact]
    public async Task Bad_names_unknown_vms_and_bad_save_files_are_refused_and_the_vm_runs_on()
    {
        using var rig = new Rig();
        var d = rig.D;
        await rig.Start("steady");
        await rig.Count("steady", 1);
        string existing = Path.Combine(rig.Saves, "taken"), fifo = Path.Combine(rig.Saves, "fifo");
        File.WriteAllText(existing, "mine");
        Assert.Equal(0, TestEnvironment.Run("mkfifo", fifo).ExitCode);
        foreach (var (request, want) in new[]
        {
            (("vms/steady/snapshots", """{"name": "a/b"}"""), (400, "name: 'a/b' is not a snapshot name")),
            (("vms/steady/snapshots", """{"name": ".hidden"}"""), (400, "name: '.hidden' is not a snapshot name")),
            (("vms/steady/snapshots", """{"name": ""}"""), (400, "name: '' is not a snapshot name")),
            (("vms/steady/snapshots", """{"label": "x"}"""), (400, "label")),
            (("vms/steady/snapshots/..%2Fx/revert", null), (400, "is not a snapshot name")),
            (("vms/nobody/snapshots", null), (404, "no VM named 'nobody'")),
            (("vms/nobody/save", Rig.Body(Path.Combine(rig.Saves, "n"))), (404, "no VM named 'nobody'")),
            (("vms/steady/save", Rig.Body("relative/file")), (400, "file: 'relative/file' is not an absolute path")),
            (("vms/steady/save", Rig.Body("/no/such/dir/file")), (400, "file: /no/such/dir/file: its directory /no/such/dir does not exist")),
            (("vms/steady/save", Rig.Body(existing)), (400, $"file: {existing} exists")),
            (("vms/steady/save", Rig.Body(rig.Saves)), (400, "is a directory")),
            (("vms/steady/save", """{"path": "/tmp/x"}"""), (400, "file")),
            (("restore", Rig.Body(existing)), (400, $"file: {existing} is not a save this vireod made")),
            (("restore", Rig.Body(Path.Combine(rig.Saves, "none"))), (400, "no such file")),
            (("restore", Rig.Body("/dev/zero")), (400, "file: /dev/zero is a character device, not a save")), // never read to its end
            (("restore", Rig.Body(fifo)), (400, $"file: {fifo} is a FIFO, not a save")),                      // never waited on
            (("restore", Rig.Body("/proc")), (400, "file: /proc is a directory, not a save")),
        })
        {
            var (status, body) = await d.Send(Post, request.Item1, request.Item2);
            Assert.True(status == want.Item1 && Fault(body).Contains(want.Item2), $"POST {request.Item1} {request.Item2}: {status} {body}");
        }
        var (s, b) = await d.Send(Delete, "vms/steady/snapshots/nothing");
        Assert.Equal((404, "snapshot: 'steady' has no snapshot named 'nothing'"), (s, Fault(b)));
        (s, b) = await d.Send(HttpMethod.Get, "vms/nobody/snapshots");
        Assert.Equal(404, s);
        Assert.Equal("mine", File.ReadAllText(existing)); // never overwritten
        Assert.Equal(DomainState.Running, (await d.Get("steady")).State);
        await rig.Count("steady", 2); // nothing above paused it for good

        await d.Ok(Post, "vms/steady/destroy");
        (s, b) = await d.Send(Post, "vms/steady/save", Rig.Body(Path.Combine(rig.Saves, "off")));
        Assert.Equal((409, "'steady' is shut off: only a running or paused VM can be saved"), (s, Fault(b)));
        (s, b) = await d.Send(Post, "vms/steady/snapshots");
        Assert.Equal(409, s);
    }

    [KvmFact]
    public async Task A_changed_save_a_damaged_ram_file_and_a_save_of_an_undefined_vm_are_refused_and_nothing_is_lost()
    {
        using var rig = new Rig();
        var d = rig.D;
        await rig.Start("fragile");
        await rig.Count("fragile", 1);
        string file = Path.Combine(rig.Saves, "fragile.save"), mem = file + ".mem";
        await d.Ok(Post, "vms/fragile/save", Rig.Body(file));

        // The state file changed by a byte: not the save vireod wrote.
        byte[] state = File.ReadAllBytes(file);
        byte[] changed = (byte[])state.Clone();
        changed[changed.Length / 2] ^= 0x40;
        File.WriteAllBytes(file, changed);
        var (status, body) = await d.Send(Post, "restore", Rig.Body(file));
        Assert.Equal((400, true), (status, Fault(body).Contains("is not a save this vireod made, or it has been changed since")));
        File.WriteAllBytes(file, state);

        // The RAM file cut short: the VMM refuses it, and says why.
        string whole = mem + ".whole";
        File.Copy(mem, whole);
        using (var f = File.OpenWrite(mem))
        {
            f.SetLength(f.Length / 2);
        }
        (status, body) = await d.Send(Post, "restore", Rig.Body(file));
        Assert.True(status == 400 && Fault(body).StartsWith($"file: {file} could not be loaded: snapshot/load: ", StringComparison.Ordinal), body);
        var vm = await d.Get("fragile");
        Assert.Equal((DomainState.Saved, null, file), (vm.State, vm.Pid, vm.SavedTo)); // as it was
        File.Delete(mem);
        (status, body) = await d.Send(Post, "restore", Rig.Body(file));
        Assert.Equal((400, true), (status, Fault(body).Contains("its RAM file") && Fault(body).Contains("is missing")));

        // With its RAM file back, the same save restores.
        File.Move(whole, mem);
        await d.Ok(Post, "restore", Rig.Body(file));
        await rig.Count("fragile", 2);

        // Saved again, then undefined: its save names the VM it was.
        string again = Path.Combine(rig.Saves, "again.save");
        await d.Ok(Post, "vms/fragile/save", Rig.Body(again));
        Assert.Equal(204, (await d.Send(Delete, "vms/fragile")).Status);
        (status, body) = await d.Send(Post, "restore", Rig.Body(again));
        Assert.Equal((409, $"file: {again} is a save of 'fragile', which has been undefined since"), (status, Fault(body)));
        // A new VM of that name is not the one the save belongs to.
        await rig.Start("fragile");
        await d.Ok(Post, "vms/fragile/destroy");
        (status, body) = await d.Send(Post, "restore", Rig.Body(again));
        Assert.Equal(409, status);
        Assert.Equal(DomainState.ShutOff, (await d.Get("fragile")).State);
    }
}
